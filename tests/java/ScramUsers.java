// SCRAM users through the Java AdminClient 4.1.1 (KIP-554: AlterUserScramCredentials and
// DescribeUserScramCredentials, what `kafka-configs --entity-type users` sends), over SASL_SSL
// with the properties file `sluice dev --secure` writes for Java.
// Run in source-launch mode: java -cp 'kafka-jars/*' ScramUsers.java PROPERTIES STEP USER [PASSWORD]
// STEP: create (SCRAM-SHA-256, 8192 iterations), describe, delete. Prints one JSON document.
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.FileInputStream;
import java.util.*;
import java.util.concurrent.ExecutionException;
import org.apache.kafka.clients.admin.*;

public class ScramUsers {
    public static void main(String[] args) throws Exception {
        Properties props = new Properties();
        try (FileInputStream in = new FileInputStream(args[0])) {
            props.load(in);
        }
        String step = args[1], user = args[2];
        Map<String, Object> out = new LinkedHashMap<>();
        try (Admin admin = Admin.create(props)) {
            try {
                switch (step) {
                    case "create":
                        admin.alterUserScramCredentials(List.of(new UserScramCredentialUpsertion(
                                user, new ScramCredentialInfo(ScramMechanism.SCRAM_SHA_256, 8192), args[3])))
                            .all().get();
                        out.put("result", "OK");
                        break;
                    case "delete":
                        admin.alterUserScramCredentials(List.of(
                                new UserScramCredentialDeletion(user, ScramMechanism.SCRAM_SHA_256)))
                            .all().get();
                        out.put("result", "OK");
                        break;
                    default:
                        UserScramCredentialsDescription d =
                            admin.describeUserScramCredentials(List.of(user)).description(user).get();
                        List<Map<String, Object>> creds = new ArrayList<>();
                        for (ScramCredentialInfo i : d.credentialInfos()) {
                            creds.add(Map.of("mechanism", i.mechanism().mechanismName(), "iterations", i.iterations()));
                        }
                        out.put("result", "OK");
                        out.put("credentials", creds);
                }
            } catch (ExecutionException e) {
                out.put("result", e.getCause().getClass().getSimpleName() + ": " + e.getCause().getMessage());
            }
        }
        System.out.println(new ObjectMapper().writeValueAsString(out));
    }
}
