//! Framing and decoding without a broker.

use super::*;

/// A frame's bytes, its file ranges read.
fn flatten(parts: Vec<Part>) -> Vec<u8> {
    parts
        .into_iter()
        .flat_map(|p| match p {
            Part::Memory(b) => b.to_vec(),
            Part::File(r) => r.read().unwrap().to_vec(),
        })
        .collect()
}

/// A file of `len` numbered bytes, and a range of it.
fn file_range(dir: &std::path::Path, len: usize, skip: usize) -> (FileRange, Bytes) {
    let path = dir.join(format!("segment-{len}-{skip}"));
    let content: Vec<u8> = (0..len + skip).map(|i| (i % 251) as u8).collect();
    std::fs::write(&path, &content).unwrap();
    let file = Arc::new(std::fs::File::open(&path).unwrap());
    (
        FileRange::new(file, &path, skip as u64, len),
        Bytes::from(content[skip..].to_vec()),
    )
}

fn frame(key: i16, version: i16, correlation: i32, body: &[u8]) -> Bytes {
    let mut b = BytesMut::new();
    b.put_i16(key);
    b.put_i16(version);
    b.put_i32(correlation);
    b.put_i16(4);
    b.put_slice(b"test");
    if version >= 3 && key == 18 {
        b.put_u8(0); // header tagged fields (header v2)
    }
    b.put_slice(body);
    b.freeze()
}

#[test]
fn an_api_versions_request_decodes_and_a_too_new_one_gets_the_kip_511_answer() {
    // v3: compact client software name "a" and version "1", then tagged fields.
    let d = decode_request(frame(18, 3, 7, &[2, b'a', 2, b'1', 0]))
        .unwrap()
        .ok()
        .unwrap();
    assert_eq!(d.api_key, ApiKey::ApiVersions);
    assert_eq!(d.header.correlation_id, 7);
    // v9 does not exist yet: a v0 answer with error 35 and our ranges, not a closed socket.
    let Err((correlation, answer)) = decode_request(frame(18, 9, 8, &[])).unwrap() else {
        panic!("a too-new ApiVersions is answered")
    };
    assert_eq!(correlation, 8);
    let ResponseKind::ApiVersions(r) = &answer else {
        panic!("an ApiVersions answer")
    };
    assert_eq!(r.error_code, 35);
    assert!(r
        .api_keys
        .iter()
        .any(|k| k.api_key == ApiKey::Produce as i16));
    let bytes =
        flatten(encode_response(ApiKey::ApiVersions, 0, correlation, &answer, &[]).unwrap());
    assert_eq!(
        (&bytes[4..8]).get_i32(),
        8,
        "the correlation id comes first"
    );
}

#[test]
fn bad_requests_are_refused_with_a_reason_naming_the_problem() {
    let cases: Vec<(&str, Bytes, &str)> = vec![
        ("too short", Bytes::from_static(&[0, 18]), "no header"),
        ("unknown key", frame(999, 0, 1, &[]), "unknown API key 999"),
        (
            "unsupported API",
            frame(ApiKey::CreateAcls as i16, 0, 1, &[]),
            "not supported",
        ),
        (
            "too-old produce",
            frame(0, 1, 1, &[]),
            "Produce v1 is not supported",
        ),
        (
            "garbage body",
            frame(3, 1, 1, &[0xff, 0xff, 0xff]),
            "does not decode",
        ),
    ];
    for (name, f, want) in cases {
        let Err(why) = decode_request(f) else {
            panic!("{name}: must be refused")
        };
        assert!(why.contains(want), "{name}: {why}");
    }
}

/// Every advertised version of the group APIs encodes both the answer and the error answer
/// (a field set that a version lacks makes the codec refuse, which would close the
/// connection instead of answering).
#[test]
fn group_answers_encode_at_every_advertised_version() {
    use kafka_protocol::messages::describe_groups_response::{
        DescribedGroup, DescribedGroupMember,
    };
    use kafka_protocol::messages::{
        ConsumerGroupDescribeResponse, DescribeGroupsResponse, GroupId,
    };
    let range = |k: ApiKey| versions::supported(k).expect("advertised");
    let (lo, hi) = range(ApiKey::FindCoordinator);
    for v in lo..=hi {
        for found in [
            Ok((2, "h".to_string(), 9092)),
            Err((15, "not yet".to_string())),
        ] {
            let r = groups::coordinator_answer(v, vec![(kstr("g"), found)]);
            encode_response(ApiKey::FindCoordinator, v, 1, &r.into(), &[])
                .unwrap_or_else(|e| panic!("FindCoordinator v{v}: {e}"));
        }
    }
    let (lo, hi) = range(ApiKey::ConsumerGroupDescribe);
    for v in lo..=hi {
        let member = sluice_proto::v1::GroupMember {
            member_id: "m".into(),
            member_epoch: 3,
            subscribed_topic_names: vec!["t".into()],
            assignment: Some(sluice_proto::v1::Assignment {
                topic_partitions: vec![sluice_proto::v1::TopicPartitions {
                    topic: "t".into(),
                    topic_id: String::new(),
                    partitions: vec![0, 1],
                }],
            }),
            ..Default::default()
        };
        let groups = vec![
            sluice_proto::v1::DescribedGroup {
                group_id: "g".into(),
                group_state: sluice_proto::v1::GroupState::Stable as i32,
                group_type: "consumer".into(),
                members: vec![member],
                ..Default::default()
            },
            sluice_proto::v1::DescribedGroup {
                group_id: "c".into(),
                group_type: "classic".into(),
                ..Default::default()
            },
            sluice_proto::v1::DescribedGroup {
                group_id: "x".into(),
                error_code: sluice_proto::v1::ErrorCode::GroupIdNotFound as i32,
                error_message: "no such group".into(),
                ..Default::default()
            },
        ];
        let described: Vec<_> = groups
            .into_iter()
            .map(|d| groups::consumer_group_described(GroupId(kstr(d.group_id.clone())), d))
            .collect();
        assert_eq!(described[0].error_code, 0);
        assert_eq!(
            described[0].members[0].assignment.topic_partitions[0].partitions,
            vec![0, 1]
        );
        assert_eq!(
            described[1].error_code, 69,
            "a classic group is not a consumer group"
        );
        assert_eq!(described[2].error_code, 69);
        let r = ConsumerGroupDescribeResponse::default().with_groups(described);
        encode_response(ApiKey::ConsumerGroupDescribe, v, 1, &r.into(), &[])
            .unwrap_or_else(|e| panic!("ConsumerGroupDescribe v{v}: {e}"));
    }
    let (lo, hi) = range(ApiKey::DescribeGroups);
    for v in lo..=hi {
        let ok = DescribedGroup::default()
            .with_group_id(GroupId(kstr("g")))
            .with_group_state(kstr("Stable"))
            .with_members(vec![DescribedGroupMember::default()
                .with_member_id(kstr("m"))
                .with_client_id(kstr("c"))
                .with_client_host(kstr("/h"))]);
        let failed = groups::described_error(
            DescribedGroup::default().with_group_id(GroupId(kstr("g"))),
            16,
        );
        let r = DescribeGroupsResponse::default().with_groups(vec![ok, failed]);
        encode_response(ApiKey::DescribeGroups, v, 1, &r.into(), &[])
            .unwrap_or_else(|e| panic!("DescribeGroups v{v}: {e}"));
    }
}

/// Metadata for a topic the image lacks (`metadata::unknown_topic`): by name
/// UNKNOWN_TOPIC_OR_PARTITION, INVALID_TOPIC_EXCEPTION for an illegal name, or
/// LEADER_NOT_AVAILABLE when this request just auto-created it; by id (v10+) UNKNOWN_TOPIC_ID with the id, as Kafka answers (it answered
/// UNKNOWN_TOPIC_OR_PARTITION before).
#[test]
fn an_unknown_topic_is_answered_by_how_it_was_asked() {
    let id = uuid::Uuid::from_bytes([9; 16]);
    let created = vec!["new".to_string()];
    let cases = [
        (Some("nope"), 3, "unknown name"),
        (Some("new"), 5, "just auto-created"),
        (None, 100, "unknown id"),
        // librdkafka's test 0057: a producer to `bad$#!` must fail its records, which it
        // does on INVALID_TOPIC_EXCEPTION (it waited on UNKNOWN_TOPIC_OR_PARTITION).
        (Some("bad$#!"), 17, "an illegal name"),
        (Some(".."), 17, "an illegal name"),
    ];
    for (name, code, why) in cases {
        let t = metadata::unknown_topic(name.map(String::from), id, &created);
        assert_eq!(t.error_code, code, "{why}");
        assert_eq!(t.name.is_none(), name.is_none(), "{why}");
        if name.is_none() {
            assert_eq!(t.topic_id, id, "the id is echoed");
        }
    }
}

/// A Fetch answer goes out as parts: the large record sets are the very buffers the log
/// read returned (sent by reference) or the file ranges it returned (sent with sendfile),
/// and the parts together are byte for byte the frame a contiguous encoding of the same
/// records gives, at every Fetch version served.
#[test]
fn a_fetch_frame_sends_large_record_sets_as_they_are_and_equals_the_contiguous_encoding() {
    use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
    use kafka_protocol::messages::{FetchResponse, TopicName};
    let dir = tempfile::tempdir().unwrap();
    let big: Vec<Bytes> = (0..2u8)
        .map(|i| Bytes::from(vec![i + 1; frame::SPLICE_MIN_BYTES + 7 * i as usize]))
        .collect();
    let small = Bytes::from_static(b"a few bytes of records");
    let (range, range_bytes) = file_range(dir.path(), 100_000, 333);
    let partition = |i: i32, records: &Bytes| {
        PartitionData::default()
            .with_partition_index(i)
            .with_high_watermark(100 + i as i64)
            .with_records(Some(records.clone()))
    };
    let response = |file_part: &Bytes| {
        FetchResponse::default().with_responses(vec![FetchableTopicResponse::default()
            .with_topic(TopicName(kstr("t")))
            .with_partitions(vec![
                partition(0, &big[0]),
                partition(1, &small),
                partition(2, &Bytes::new()),
                partition(3, &big[1]),
                partition(4, file_part),
            ])])
    };
    let stand_in = frame::placeholder(range.len()).unwrap();
    let (lo, hi) = versions::supported(ApiKey::Fetch).expect("advertised");
    for v in lo..=hi {
        let body: ResponseKind = response(&stand_in).into();
        let parts =
            encode_response(ApiKey::Fetch, v, 5, &body, std::slice::from_ref(&range)).unwrap();
        // Fields, big, fields, big, fields, the file, and from v12 (flexible) the trailing
        // tagged fields.
        let expected = if v >= 12 { 7 } else { 6 };
        assert_eq!(parts.len(), expected, "Fetch v{v}");
        for b in &big {
            assert!(
                parts.iter().any(|p| matches!(p, Part::Memory(m)
                    if m.as_ptr() == b.as_ptr() && m.len() == b.len())),
                "Fetch v{v}: a large record set is sent by reference"
            );
        }
        assert!(
            parts
                .iter()
                .any(|p| matches!(p, Part::File(r) if r.len() == range.len())),
            "Fetch v{v}: the file range is sent as it is"
        );
        let mut flat = BytesMut::new();
        flat.put_i32(0);
        ResponseHeader::default()
            .with_correlation_id(5)
            .encode(&mut flat, ApiKey::Fetch.response_header_version(v))
            .unwrap();
        let real: ResponseKind = response(&range_bytes).into();
        real.encode(&mut flat, v).unwrap();
        let len = (flat.len() - 4) as i32;
        flat[..4].copy_from_slice(&len.to_be_bytes());
        assert_eq!(flatten(parts), flat.to_vec(), "Fetch v{v}");
    }
    // A placeholder without its range, or a range without its placeholder: no frame.
    let body: ResponseKind = response(&stand_in).into();
    let e = encode_response(ApiKey::Fetch, 12, 5, &body, &[]).unwrap_err();
    assert!(e.contains("placeholder"), "{e}");
    let body: ResponseKind = response(&Bytes::new()).into();
    let e = encode_response(ApiKey::Fetch, 12, 5, &body, std::slice::from_ref(&range)).unwrap_err();
    assert!(e.contains("1 file ranges had no placeholder"), "{e}");
}

/// The writer puts a frame's parts on a real socket in order: bytes, then file ranges with
/// sendfile (a range of several MiB fills the socket buffer many times over), then bytes.
#[tokio::test]
async fn the_writer_sends_file_ranges_between_bytes_over_a_socket() {
    let dir = tempfile::tempdir().unwrap();
    let (a, a_bytes) = file_range(dir.path(), 6 << 20, 4096 + 17);
    let (b, b_bytes) = file_range(dir.path(), 40_000, 0);
    let parts = vec![
        Part::Memory(Bytes::from_static(b"head")),
        Part::File(a),
        Part::Memory(Bytes::from_static(b"middle")),
        Part::File(b),
        Part::Memory(Bytes::from_static(b"tail")),
    ];
    let mut want = b"head".to_vec();
    want.extend_from_slice(&a_bytes);
    want.extend_from_slice(b"middle");
    want.extend_from_slice(&b_bytes);
    want.extend_from_slice(b"tail");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let reader = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).await.unwrap();
        got
    });
    let (_r, mut w) = TcpStream::connect(addr).await.unwrap().into_split();
    tokio::time::timeout(std::time::Duration::from_secs(30), async {
        write_plain_parts(&mut w, parts).await.unwrap();
        w.shutdown().await.unwrap();
    })
    .await
    .expect("written within 30 s");
    drop(w);
    let got = tokio::time::timeout(std::time::Duration::from_secs(30), reader)
        .await
        .expect("read within 30 s")
        .unwrap();
    assert_eq!(got.len(), want.len());
    assert!(got == want, "the bytes arrive in order");
}
