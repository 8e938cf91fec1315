//! Power loss of the whole metadata quorum (issue 15): the three controllers keep their sled
//! directories on `sluice-lazyfs` (tests/src/bin/sluice-lazyfs.rs), a FUSE filesystem that
//! keeps every file's unsynced writes apart and drops them when the test "pulls the plug".
//! With topic creations in flight, all three controllers are SIGKILLed at once and every
//! write not fsynced is lost, as in a power cut; they restart, and every creation that was
//! acknowledged must still be there. Rounds are seeded (`SLUICE_POWER_LOSS_SEED`, printed);
//! `SLUICE_POWER_LOSS_ROUNDS` runs more of them (default 3).

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sluice_tests::standin::StandIn;
use sluice_tests::*;

const WAIT: Duration = Duration::from_secs(60);

/// The FUSE daemon and its mount; unmounted (and killed if need be) on drop.
struct LazyFs {
    child: std::process::Child,
    stdin: std::process::ChildStdin,
    replies: std::sync::mpsc::Receiver<String>,
    mountpoint: std::path::PathBuf,
}

impl LazyFs {
    fn mount(mountpoint: &std::path::Path) -> LazyFs {
        assert!(
            std::path::Path::new("/dev/fuse").exists(),
            "this test needs /dev/fuse (a FUSE-capable kernel; run as root or with fuse3's fusermount)"
        );
        let mut child = Command::new(env!("CARGO_BIN_EXE_sluice-lazyfs"))
            .arg(mountpoint)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn sluice-lazyfs");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, replies) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let fs = LazyFs {
            child,
            stdin,
            replies,
            mountpoint: mountpoint.to_path_buf(),
        };
        let first = fs.reply();
        assert_eq!(first, "mounted", "sluice-lazyfs did not mount");
        fs
    }

    fn reply(&self) -> String {
        self.replies
            .recv_timeout(Duration::from_secs(30))
            .expect("sluice-lazyfs answers within 30 s")
    }

    fn command(&mut self, cmd: &str) -> String {
        writeln!(self.stdin, "{cmd}").expect("write to sluice-lazyfs");
        self.stdin.flush().expect("flush");
        self.reply()
    }
}

impl Drop for LazyFs {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "quit");
        let _ = self.stdin.flush();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        // A killed daemon leaves a dead mount behind.
        let _ = nix::mount::umount2(&self.mountpoint, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// A small deterministic generator (xorshift64*), so a failing round can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_metadata_survives_a_power_loss_of_every_controller() {
    let rounds: u32 = std::env::var("SLUICE_POWER_LOSS_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let seed: u64 = std::env::var("SLUICE_POWER_LOSS_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("clock")
                .as_nanos() as u64
                | 1
        });
    eprintln!("power-loss rounds: {rounds}, SLUICE_POWER_LOSS_SEED={seed}");
    let mut rng = Rng(seed);

    let root = tempfile::tempdir().expect("temp dir");
    let mnt = root.path().join("mnt");
    std::fs::create_dir_all(&mnt).expect("mountpoint");
    let mut fs = LazyFs::mount(&mnt);
    let mut q = Quorum::start_some(3, 0, &[]);
    for id in 1..=3u64 {
        let node = q.nodes.get_mut(&id).expect("node");
        node.dir = mnt.join(format!("controller-{id}"));
        // Logs stay off the lossy filesystem.
        node.log = Some(root.path().join(format!("controller-{id}.log")));
    }
    for id in 1..=3 {
        q.spawn(id);
    }
    let addrs: Vec<String> = (1..=3).map(|i| q.addr(i)).collect();
    wait_for("a leader", WAIT, || leader_of(&addrs[0])).await;
    let broker = StandIn::start(addrs.clone(), 1);

    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut lost_bytes_total = 0usize;
    for round in 0..rounds {
        wait_for("the stand-in broker to be usable", WAIT, || async {
            create_topic(&addrs[round as usize % 3], &format!("ready-{round}"), 1, 1)
                .await
                .ok()
                .filter(|r| r.error_code == 0)
        })
        .await;
        acked.lock().unwrap().push(format!("ready-{round}"));
        let writers = 1 + rng.below(4);
        let load = Duration::from_millis(200 + rng.below(1000));
        let mut tasks = Vec::new();
        for w in 0..writers {
            let addr = addrs[(w % 3) as usize].clone();
            let acked = acked.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0.. {
                    let name = format!("r{round}-w{w}-{i}");
                    if let Ok(Ok(r)) = tokio::time::timeout(
                        Duration::from_secs(5),
                        create_topic(&addr, &name, 1, 1),
                    )
                    .await
                    {
                        if r.error_code == 0 {
                            acked.lock().unwrap().push(name);
                        }
                    }
                }
            }));
        }
        tokio::time::sleep(load).await;
        // The plug: every controller dies at once, then whatever was not fsynced is gone.
        for id in 1..=3 {
            q.kill(id);
        }
        for t in &tasks {
            t.abort();
        }
        for t in tasks {
            let _ = t.await;
        }
        let plugged = fs.command("plug");
        let lost: usize = plugged
            .split_whitespace()
            .nth(2)
            .and_then(|b| b.parse().ok())
            .unwrap_or(0);
        lost_bytes_total += lost;
        eprintln!(
            "round {round}: {writers} writers for {load:?}, {} acknowledged so far; {plugged}",
            acked.lock().unwrap().len()
        );
        for id in 1..=3 {
            q.spawn(id);
        }
        let (leader, _) = wait_for("a leader after the power loss", WAIT, || async {
            for a in &addrs {
                if let Some(l) = leader_of(a).await {
                    return Some(l);
                }
            }
            None
        })
        .await;
        let expected = acked.lock().unwrap().clone();
        let leader_addr = q.addr(leader);
        let (image, _) = wait_for("the leader's image", WAIT, || image_of(&leader_addr)).await;
        let missing: Vec<&String> = expected
            .iter()
            .filter(|n| !image.topic_ids.contains_key(*n))
            .collect();
        assert!(
            missing.is_empty(),
            "round {round} (SLUICE_POWER_LOSS_SEED={seed}): {} acknowledged topic creations lost \
             in the power loss: {missing:?}\ncontroller {leader}'s log:\n{}",
            missing.len(),
            q.log_of(leader)
        );
    }
    let fsyncs = fs.command("stats");
    eprintln!("{fsyncs}; {lost_bytes_total} unsynced bytes dropped over all rounds");
    drop(broker);
    drop(q);
}
