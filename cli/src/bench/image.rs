//! `sluice bench metadata --partitions N[,M…]`: what the metadata image costs at scale, in
//! process (no cluster): for a 3-broker image with N RF-3 partitions (topics of 100), its
//! encoded size, encode and decode time (what a broker pays to persist and load it), and
//! the time to apply one ISR change and one broker fencing (what every broker and
//! controller pays per metadata record batch), and what a broker's journal stores for that
//! ISR change (what persisting it costs instead of a whole image).

use std::collections::BTreeMap;
use std::time::Instant;

use serde::Serialize;
use sluice_controller::logic::{self, AlterPartition, Defaults};
use sluice_metadata::records::{Endpoint, MetadataRecord};
use sluice_metadata::{BrokerId, MetadataImage, TopicId};

use crate::output::{table, OutputFormat};

#[derive(Debug, Serialize)]
pub struct Row {
    partitions: u32,
    image_bytes: usize,
    encode_ms: f64,
    decode_ms: f64,
    apply_isr_change_ms: f64,
    /// What a broker appends to its metadata journal for that change (instead of
    /// re-encoding the image).
    journal_isr_change_bytes: usize,
    fence_broker_records: usize,
    apply_fence_broker_ms: f64,
}

fn commit(image: &MetadataImage, records: &[MetadataRecord]) -> MetadataImage {
    image.apply(image.offset + 1, records).0
}

/// A 3-broker image with `partitions` RF-3 partitions in topics of 100.
fn build(partitions: u32) -> anyhow::Result<MetadataImage> {
    let mut img = MetadataImage::default();
    for id in 1..=3 {
        let records = logic::register_broker(
            &img,
            BrokerId(id),
            &format!("bench-{id}"),
            Endpoint {
                host: "127.0.0.1".into(),
                port: 9000 + id as u16,
            },
            None,
            false,
        )
        .map_err(|r| anyhow::anyhow!("{}", r.message))?;
        img = commit(&img, &records);
        img = commit(&img, &logic::unfence_broker(&img, BrokerId(id)));
    }
    let defaults = Defaults {
        num_partitions: 1,
        replication_factor: 3,
    };
    let topics = partitions.div_ceil(100);
    for t in 0..topics {
        let n = (partitions - t * 100).min(100) as i32;
        let mut id = [0u8; 16];
        id[..4].copy_from_slice(&t.to_be_bytes());
        id[15] = 1;
        let records = logic::create_topic(
            &img,
            &format!("bench-{t}"),
            n,
            3,
            &BTreeMap::new(),
            &defaults,
            TopicId(id),
        )
        .map_err(|r| anyhow::anyhow!("{}", r.message))?;
        img = commit(&img, &records);
    }
    Ok(img)
}

fn ms(t: Instant, n: u32) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0 / f64::from(n)
}

/// Measures one image size.
pub fn measure(partitions: u32) -> anyhow::Result<Row> {
    let img = build(partitions)?;
    let reps = 20;
    let t = Instant::now();
    let mut bytes = Vec::new();
    for _ in 0..reps {
        bytes = img.encode();
    }
    let encode_ms = ms(t, reps);
    let t = Instant::now();
    for _ in 0..reps {
        MetadataImage::decode(&bytes).map_err(|e| anyhow::anyhow!(e))?;
    }
    let decode_ms = ms(t, reps);
    // One ISR shrink of the first partition, as its leader proposes it.
    let (topic_id, p) = img
        .topics
        .iter()
        .next()
        .map(|(id, t)| (*id, t.partitions[0].clone()))
        .ok_or_else(|| anyhow::anyhow!("no topic"))?;
    let (isr_records, _) = logic::alter_partition(
        &img,
        &AlterPartition {
            broker: p.leader,
            topic_id,
            index: 0,
            leader_epoch: p.leader_epoch.get(),
            partition_epoch: p.partition_epoch.get(),
            new_isr: vec![p.leader],
        },
    )
    .map_err(|r| anyhow::anyhow!("{}", r.message))?;
    let journal_isr_change_bytes = sluice_broker::image_store::frame_bytes(
        &sluice_metadata::records::RecordBatch::new(isr_records.clone()).encode(),
    );
    let reps = 200;
    let t = Instant::now();
    for _ in 0..reps {
        std::hint::black_box(commit(&img, &isr_records));
    }
    let apply_isr_change_ms = ms(t, reps);
    // Broker 1 fenced: it leaves every ISR and its leaderships move.
    let fence = logic::fence_broker(&img, BrokerId(1));
    let reps = 5;
    let t = Instant::now();
    for _ in 0..reps {
        std::hint::black_box(commit(&img, &fence));
    }
    Ok(Row {
        partitions,
        image_bytes: bytes.len(),
        encode_ms,
        decode_ms,
        apply_isr_change_ms,
        journal_isr_change_bytes,
        fence_broker_records: fence.len(),
        apply_fence_broker_ms: ms(t, reps),
    })
}

pub fn print(rows: &[Row], output: OutputFormat) -> anyhow::Result<()> {
    match output {
        OutputFormat::Json => println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({"benchmark": "metadata-image", "rows": rows})
            )?
        ),
        OutputFormat::Table => println!(
            "{}",
            table(
                &[
                    "partitions",
                    "image bytes",
                    "encode ms",
                    "decode ms",
                    "apply 1 ISR change ms",
                    "journal bytes",
                    "fence-broker records",
                    "apply fence ms",
                ],
                rows.iter()
                    .map(|r| {
                        vec![
                            r.partitions.to_string(),
                            r.image_bytes.to_string(),
                            format!("{:.2}", r.encode_ms),
                            format!("{:.2}", r.decode_ms),
                            format!("{:.3}", r.apply_isr_change_ms),
                            r.journal_isr_change_bytes.to_string(),
                            r.fence_broker_records.to_string(),
                            format!("{:.2}", r.apply_fence_broker_ms),
                        ]
                    })
                    .collect(),
            )
        ),
    }
    Ok(())
}
