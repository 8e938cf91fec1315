// Dynamic broker configs through the Java AdminClient 4.1.1, as `kafka-configs --entity-type
// brokers --entity-default --alter --add-config K=V` sends them (a BROKER resource named "").
// Run in source-launch mode: java -cp 'kafka-jars/*' DynamicConfigs.java BOOTSTRAP TOPIC BROKER
// Prints one JSON document with what each step saw.
import com.fasterxml.jackson.databind.ObjectMapper;
import java.util.*;
import java.util.concurrent.ExecutionException;
import org.apache.kafka.clients.admin.*;
import org.apache.kafka.clients.producer.*;
import org.apache.kafka.common.config.ConfigResource;
import org.apache.kafka.common.serialization.ByteArraySerializer;

public class DynamicConfigs {
    static Admin admin;
    static String bootstrap, topic;
    static final byte[] BIG = new byte[5000];

    static String alter(String broker, AlterConfigOp.OpType op, String key, String value) {
        ConfigResource r = new ConfigResource(ConfigResource.Type.BROKER, broker);
        AlterConfigOp o = new AlterConfigOp(new ConfigEntry(key, value), op);
        try {
            admin.incrementalAlterConfigs(Map.of(r, List.of(o))).all().get();
            return "OK";
        } catch (ExecutionException e) {
            return e.getCause().getClass().getSimpleName() + ": " + e.getCause().getMessage();
        } catch (InterruptedException e) {
            throw new RuntimeException(e);
        }
    }

    static Map<String, Map<String, Object>> describe(ConfigResource.Type type, String name)
            throws Exception {
        ConfigResource r = new ConfigResource(type, name);
        Config c = admin.describeConfigs(List.of(r)).all().get().get(r);
        Map<String, Map<String, Object>> out = new TreeMap<>();
        for (ConfigEntry e : c.entries()) {
            Map<String, Object> m = new TreeMap<>();
            m.put("value", e.value());
            m.put("source", e.source().name());
            m.put("read_only", e.isReadOnly());
            out.put(e.name(), m);
        }
        return out;
    }

    /** Produces BIG until its outcome is `want` (an exception's simple name, or "OK"): a
     * broker applies a committed config change when its metadata follower gets there. */
    static String produceBig(String want) throws Exception {
        Properties p = new Properties();
        p.put("bootstrap.servers", bootstrap);
        p.put("acks", "all");
        p.put("key.serializer", ByteArraySerializer.class.getName());
        p.put("value.serializer", ByteArraySerializer.class.getName());
        long deadline = System.currentTimeMillis() + 30_000;
        try (Producer<byte[], byte[]> producer = new KafkaProducer<>(p)) {
            while (true) {
                String got;
                try {
                    producer.send(new ProducerRecord<>(topic, 0, null, BIG)).get();
                    got = "OK";
                } catch (ExecutionException e) {
                    got = e.getCause().getClass().getSimpleName();
                }
                if (got.equals(want) || System.currentTimeMillis() > deadline) {
                    return got;
                }
            }
        }
    }

    static Map<String, Object> pick(Map<String, Map<String, Object>> all, String... keys) {
        Map<String, Object> out = new TreeMap<>();
        for (String k : keys) {
            out.put(k, all.get(k));
        }
        return out;
    }

    public static void main(String[] args) throws Exception {
        bootstrap = args[0];
        topic = args[1];
        String broker = args[2];
        Properties a = new Properties();
        a.put("bootstrap.servers", bootstrap);
        admin = Admin.create(a);
        Map<String, Object> report = new LinkedHashMap<>();
        AlterConfigOp.OpType SET = AlterConfigOp.OpType.SET, DELETE = AlterConfigOp.OpType.DELETE;
        report.put("set_size", alter("", SET, "message.max.bytes", "2000"));
        report.put("set_retention", alter("", SET, "log.retention.ms", "3600000"));
        report.put("big_refused", produceBig("RecordTooLargeException"));
        report.put("topic", pick(describe(ConfigResource.Type.TOPIC, topic),
                "max.message.bytes", "retention.ms", "segment.bytes"));
        report.put("cluster", describe(ConfigResource.Type.BROKER, ""));
        report.put("broker", pick(describe(ConfigResource.Type.BROKER, broker),
                "message.max.bytes", "log.segment.bytes", "node.id"));
        Map<String, Object> refused = new LinkedHashMap<>();
        refused.put("per_broker", alter(broker, SET, "log.retention.ms", "1000"));
        refused.put("unknown", alter("", SET, "num.io.threads", "4"));
        refused.put("bad_value", alter("", SET, "log.retention.ms", "soon"));
        report.put("refused", refused);
        report.put("delete_size", alter("", DELETE, "message.max.bytes", null));
        report.put("big_accepted", produceBig("OK"));
        report.put("cluster_after_delete", describe(ConfigResource.Type.BROKER, ""));
        report.put("delete_retention", alter("", DELETE, "log.retention.ms", null));
        report.put("cluster_at_end", describe(ConfigResource.Type.BROKER, ""));
        admin.close();
        System.out.println(new ObjectMapper().writeValueAsString(report));
    }
}
