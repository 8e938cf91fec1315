// kafkajs (2.2.4, non-flexible protocol versions only) against Sluice's Kafka port: the
// admin creates a 3-partition RF 3 topic, two members of one group share it, an idempotent
// acks=all producer sends keyed records with a repeated header key, the members consume
// until every record is seen and commit, and the admin reads committed offsets and lag.
// Usage: node main.js BOOTSTRAP TOPIC GROUP COUNT. Prints one JSON report.
'use strict';
const { Kafka, logLevel } = require('kafkajs');

const [bootstrap, topic, group, countArg] = process.argv.slice(2);
const count = Number(countArg);
const report = {
  created: false, acked: [], consumed: [], assigned: [], committed: {}, ends: {}, lag: 0, errors: [],
};
const fail = (what) => report.errors.push(String(what));

async function until(what, ms, f) {
  const start = Date.now();
  for (;;) {
    if (await f()) return true;
    if (Date.now() - start > ms) { fail(`timed out waiting for ${what}`); return false; }
    await new Promise((r) => setTimeout(r, 50));
  }
}

function headersOf(h) {
  const out = [];
  for (const [k, v] of Object.entries(h || {})) {
    for (const x of Array.isArray(v) ? v : [v]) out.push([k, x.toString()]);
  }
  return out;
}

async function main() {
  const kafka = new Kafka({ clientId: 'sluice-kafkajs', brokers: [bootstrap], logLevel: logLevel.NOTHING });
  const admin = kafka.admin();
  await admin.connect();
  report.created = await admin.createTopics({
    topics: [{ topic, numPartitions: 3, replicationFactor: 3 }], waitForLeaders: true,
  });

  const members = [0, 1].map(() => ({ consumer: kafka.consumer({ groupId: group }), got: [], assigned: [] }));
  for (const m of members) {
    m.consumer.on(m.consumer.events.GROUP_JOIN, (e) => {
      m.assigned = (e.payload.memberAssignment[topic] || []).slice().sort((a, b) => a - b);
    });
    await m.consumer.connect();
    await m.consumer.subscribe({ topics: [topic], fromBeginning: true });
    await m.consumer.run({
      eachMessage: async ({ partition, message }) => {
        m.got.push({
          partition, offset: Number(message.offset), key: message.key.toString(),
          value: message.value.toString(), headers: headersOf(message.headers),
        });
      },
    });
  }
  await until('both members to share the partitions', 60000, () =>
    members.every((m) => m.assigned.length > 0) &&
    members[0].assigned.length + members[1].assigned.length === 3);

  const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1 });
  await producer.connect();
  for (let k = 0; k < count; k++) {
    const key = `key-${k % 17}`;
    const value = `kafkajs-${k}`;
    const [meta] = await producer.send({
      topic, acks: -1, messages: [{ key, value, headers: { h: ['1', '2'] } }],
    });
    report.acked.push({ partition: meta.partition, offset: Number(meta.baseOffset), key, value, headers: [['h', '1'], ['h', '2']] });
  }
  await producer.disconnect();
  await until('every record consumed', 60000, () => members.reduce((n, m) => n + m.got.length, 0) >= count);
  for (const m of members) {
    await m.consumer.disconnect(); // commits what was consumed
    report.consumed.push(m.got);
    report.assigned.push(m.assigned);
  }
  const ends = await admin.fetchTopicOffsets(topic);
  const [committed] = await admin.fetchOffsets({ groupId: group, topics: [topic] });
  for (const e of ends) report.ends[e.partition] = Number(e.high);
  for (const c of committed.partitions) report.committed[c.partition] = Number(c.offset);
  for (const p of Object.keys(report.ends)) report.lag += report.ends[p] - (report.committed[p] ?? 0);
  await admin.disconnect();
}

main().catch(fail).finally(() => {
  process.stdout.write(JSON.stringify(report) + '\n');
  process.exit(0);
});
