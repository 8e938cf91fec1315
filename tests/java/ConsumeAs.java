// One consumer poll loop with the Java client 4.1.1, to see what a principal may read.
// Run in source-launch mode: java -cp 'kafka-jars/*' ConsumeAs.java PROPERTIES TOPIC GROUP
// Subscribes GROUP to TOPIC from the beginning and polls for up to 20 s. Prints one line:
// "OK <value>" for the first record, "NOTHING", or the exception's simple class name
// (TopicAuthorizationException, GroupAuthorizationException, ...).
import java.io.FileInputStream;
import java.time.Duration;
import java.util.*;
import org.apache.kafka.clients.consumer.*;
import org.apache.kafka.common.serialization.StringDeserializer;

public class ConsumeAs {
    public static void main(String[] args) throws Exception {
        Properties props = new Properties();
        try (FileInputStream in = new FileInputStream(args[0])) {
            props.load(in);
        }
        props.put("group.id", args[2]);
        props.put("auto.offset.reset", "earliest");
        props.put("key.deserializer", StringDeserializer.class.getName());
        props.put("value.deserializer", StringDeserializer.class.getName());
        String result = "NOTHING";
        try (KafkaConsumer<String, String> c = new KafkaConsumer<>(props)) {
            c.subscribe(List.of(args[1]));
            long deadline = System.currentTimeMillis() + 20_000;
            while (System.currentTimeMillis() < deadline) {
                ConsumerRecords<String, String> rs = c.poll(Duration.ofMillis(500));
                if (!rs.isEmpty()) {
                    result = "OK " + rs.iterator().next().value();
                    break;
                }
            }
        } catch (Exception e) {
            result = e.getClass().getSimpleName();
        }
        System.out.println(result);
    }
}
