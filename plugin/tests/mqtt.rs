//! `results-location=mqtt://...` against a real Mosquitto broker (Debian's `mosquitto`, started
//! on a free loopback port by each test and stopped after it).
mod common;

use gst::prelude::*;
use gstclsflow::meta::AnomalyInfo;
use rumqttc::{Client, Event, MqttOptions, Packet, QoS};
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A broker on `port`, stopped when dropped.
struct Broker(Child);

impl Broker {
    fn start(port: u16) -> Broker {
        Self::spawn(
            port,
            Command::new("mosquitto").args(["-p", &port.to_string()]),
        )
    }

    /// A broker that admits only `user` with `password` (a password file made by Debian's
    /// `mosquitto_passwd`, in `dir`).
    fn with_login(port: u16, dir: &std::path::Path, user: &str, password: &str) -> Broker {
        let passwords = dir.join("passwords");
        let made = Command::new("mosquitto_passwd")
            .args(["-b", "-c"])
            .arg(&passwords)
            .args([user, password])
            .status()
            .expect("mosquitto_passwd (Debian package mosquitto)");
        assert!(made.success());
        let conf = dir.join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {}\n",
                passwords.display()
            ),
        )
        .unwrap();
        Self::spawn(port, Command::new("mosquitto").arg("-c").arg(&conf))
    }

    /// A broker with a plain listener on `port` (for the test's subscriber) and a TLS one on
    /// `tls_port` that asks every client for a certificate signed by `certs`' authority.
    fn with_tls(port: u16, tls_port: u16, certs: &TestCerts) -> Broker {
        let conf = certs.dir.join("mosquitto-tls.conf");
        let f = |name: &str| certs.dir.join(name).display().to_string();
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\n\
                 listener {tls_port} 127.0.0.1\ncafile {}\ncertfile {}\nkeyfile {}\n\
                 require_certificate true\n",
                f("ca.pem"),
                f("server.pem"),
                f("server.key")
            ),
        )
        .unwrap();
        let broker = Self::spawn(port, Command::new("mosquitto").arg("-c").arg(&conf));
        wait_for_port(tls_port);
        broker
    }

    fn spawn(port: u16, command: &mut Command) -> Broker {
        let child = command
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("mosquitto (Debian package mosquitto, installed by scripts/setup.sh)");
        wait_for_port(port);
        Broker(child)
    }
}

/// Returns once something accepts connections on `port` (a broker is up).
fn wait_for_port(port: u16) {
    let t0 = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "mosquitto did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A test authority and two certificates it signed, made by the `openssl` tool in a temporary
/// folder: the broker's (for 127.0.0.1) and a client's, keys in PKCS#8 PEM.
struct TestCerts {
    dir: std::path::PathBuf,
    _keep: tempfile::TempDir,
}

impl TestCerts {
    fn make() -> TestCerts {
        let keep = tempfile::tempdir().unwrap();
        let dir = keep.path().to_path_buf();
        let openssl = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(&dir)
                .output()
                .expect("openssl (Debian package openssl)");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        openssl(
            &[
                &["req", "-x509"][..],
                &ec,
                &["-keyout", "ca.key", "-out", "ca.pem"],
                &["-days", "2", "-subj", "/CN=clsflow test authority"],
            ]
            .concat(),
        );
        std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
        for (name, ext) in [("server", true), ("client", false)] {
            let (key, csr, pem) = (
                format!("{name}.key"),
                format!("{name}.csr"),
                format!("{name}.pem"),
            );
            let subject = format!("/CN=clsflow test {name}");
            openssl(
                &[
                    &["req"][..],
                    &ec,
                    &["-keyout", &key, "-out", &csr, "-subj", &subject],
                ]
                .concat(),
            );
            let mut sign = vec![
                "x509", "-req", "-in", &csr, "-CA", "ca.pem", "-CAkey", "ca.key",
            ];
            sign.extend(["-CAcreateserial", "-days", "2", "-out", &pem]);
            if ext {
                sign.extend(["-extfile", "san.ext"]);
            }
            openssl(&sign);
        }
        // readable by the user a broker started as root switches to
        use std::os::unix::fs::PermissionsExt;
        for (path, mode) in [(dir.clone(), 0o755), (dir.join("server.key"), 0o644)] {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
        }
        TestCerts { dir, _keep: keep }
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Subscribes to `topic` and collects every message's JSON; returns once subscribed.
fn subscribe(port: u16, topic: &str, id: &str) -> Arc<Mutex<Vec<serde_json::Value>>> {
    subscribe_as(port, topic, id, None)
}

/// [`subscribe`] with a login.
fn subscribe_as(
    port: u16,
    topic: &str,
    id: &str,
    login: Option<(&str, &str)>,
) -> Arc<Mutex<Vec<serde_json::Value>>> {
    let got = Arc::new(Mutex::new(Vec::new()));
    let mut options = MqttOptions::new(id, "127.0.0.1", port);
    if let Some((user, password)) = login {
        options.set_credentials(user, password);
    }
    let (client, mut connection) = Client::new(options, 64);
    client.subscribe(topic, QoS::AtLeastOnce).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let sink = got.clone();
    std::thread::spawn(move || {
        let _client = client;
        for event in connection.iter() {
            match event {
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    let _ = tx.send(());
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    sink.lock()
                        .unwrap()
                        .push(serde_json::from_slice(&p.payload).unwrap());
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(10))
        .expect("subscribed");
    got
}

fn wait_for(got: &Arc<Mutex<Vec<serde_json::Value>>>, n: usize) -> usize {
    let t0 = Instant::now();
    while got.lock().unwrap().len() < n && t0.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(20));
    }
    got.lock().unwrap().len()
}

fn pipeline(desc: &str) -> gst::Pipeline {
    common::init();
    gst::parse::launch(desc)
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap()
}

/// Plays to EOS within `limit`; returns the error text otherwise.
fn play(p: &gst::Pipeline, limit: Duration) -> Result<(), String> {
    let bus = p.bus().unwrap();
    if p.set_state(gst::State::Playing).is_err() {
        let e = bus
            .pop_filtered(&[gst::MessageType::Error])
            .map(|m| match m.view() {
                gst::MessageView::Error(e) => format!("{} ({:?})", e.error(), e.debug()),
                _ => String::new(),
            });
        p.set_state(gst::State::Null).unwrap();
        return Err(e.unwrap_or_default());
    }
    let msg = bus.timed_pop_filtered(
        gst::ClockTime::from_nseconds(limit.as_nanos() as u64),
        &[gst::MessageType::Eos, gst::MessageType::Error],
    );
    p.set_state(gst::State::Null).unwrap();
    match msg {
        Some(m) if m.type_() == gst::MessageType::Eos => Ok(()),
        Some(m) => Err(format!("{m:?}")),
        None => Err(format!("no EOS within {limit:?}")),
    }
}

/// Plays `p` to EOS and returns the warnings it posted (waiting up to 10 s for the first: the
/// broker's answer may come after the stream's end).
fn play_for_warnings(p: &gst::Pipeline) -> Vec<String> {
    let warnings = Arc::new(Mutex::new(Vec::new()));
    let w = warnings.clone();
    p.bus().unwrap().set_sync_handler(move |_, m| {
        if let gst::MessageView::Warning(e) = m.view() {
            w.lock().unwrap().push(e.error().to_string());
        }
        gst::BusSyncReply::Pass
    });
    let t0 = Instant::now();
    play(p, Duration::from_secs(60)).unwrap();
    while warnings.lock().unwrap().is_empty() && t0.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(20));
    }
    warnings.lock().unwrap().clone()
}

#[test]
fn one_message_per_frame_reaches_the_broker() {
    let port = free_port();
    let _broker = Broker::start(port);
    let got = subscribe(port, "clsflow/line1", "test-sub");
    let p = pipeline(&format!(
        "videotestsrc num-buffers=12 ! video/x-raw,width=96,height=64 \
         ! anomalydetect name=cam0 model={} results-location=mqtt://127.0.0.1:{port}/clsflow/line1 \
         ! fakesink",
        common::model().display()
    ));
    play(&p, Duration::from_secs(60)).unwrap();
    assert_eq!(wait_for(&got, 12), 12, "one message per frame");
    let messages = got.lock().unwrap();
    for (i, m) in messages.iter().enumerate() {
        assert_eq!(m["frame"], i as u64, "in order");
        assert_eq!(m["source"], "cam0");
        for key in [
            "score",
            "normalized_score",
            "anomalous",
            "threshold",
            "regions",
        ] {
            assert!(m.get(key).is_some(), "{key} missing in {m}");
        }
    }
}

/// The broker goes away mid-stream and comes back: the pipeline runs on at its own pace, counts
/// what it had to drop, and publishes again once the broker is back.
#[test]
fn a_broker_that_goes_away_neither_stalls_nor_crashes_the_pipeline() {
    let port = free_port();
    let broker = Broker::start(port);
    let p = pipeline(&format!(
        "videotestsrc is-live=true num-buffers=80 ! video/x-raw,width=64,height=48,framerate=20/1 \
         ! anomalydetect name=cam0 model={} results-location=mqtt://127.0.0.1:{port}/clsflow/t \
           results-queue-size=5 ! fakesink sync=true",
        common::model().display()
    ));
    let dropped: Arc<Mutex<Vec<u64>>> = Arc::default();
    let d = dropped.clone();
    p.by_name("cam0")
        .unwrap()
        .static_pad("src")
        .unwrap()
        .add_probe(gst::PadProbeType::BUFFER, move |_, info| {
            if let Some(a) = info.buffer().and_then(|b| AnomalyInfo::from_buffer(b)) {
                d.lock().unwrap().push(a.results_dropped);
            }
            gst::PadProbeReturn::Ok
        });
    let runner = {
        let p = p.clone();
        std::thread::spawn(move || {
            let t0 = Instant::now();
            (play(&p, Duration::from_secs(60)), t0.elapsed())
        })
    };
    // the outage from frame 10 to frame 60, whatever the machine's speed
    let frames = |n: usize| {
        let t0 = Instant::now();
        while dropped.lock().unwrap().len() < n {
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "frame {n} never came"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    frames(10);
    drop(broker);
    frames(60);
    let _broker = Broker::start(port);
    let got = subscribe(port, "clsflow/t", "test-sub-2");
    let (result, _took) = runner.join().unwrap();
    result.unwrap();
    let dropped = dropped.lock().unwrap();
    assert_eq!(dropped.len(), 80, "every frame went through");
    assert!(
        *dropped.last().unwrap() > 0,
        "drops counted in the metadata: {dropped:?}"
    );
    assert!(dropped.windows(2).all(|w| w[0] <= w[1]));
    // publishing resumed: the stream's last frame arrives (with those kept during the outage)
    let t0 = Instant::now();
    while !got.lock().unwrap().iter().any(|m| m["frame"] == 79) {
        assert!(
            t0.elapsed() < Duration::from_secs(15),
            "the last frame never arrived after the broker came back"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A broker that is down for the whole stream: the pipeline still reaches its end (the streaming
/// thread never waits for the broker), and says what it dropped.
#[test]
fn a_broker_that_never_answers_does_not_hold_the_stream() {
    let port = free_port();
    let p = pipeline(&format!(
        "videotestsrc is-live=true num-buffers=30 ! video/x-raw,width=64,height=48,framerate=20/1 \
         ! anomalydetect name=cam0 model={} results-location=mqtt://127.0.0.1:{port}/clsflow/t \
           results-queue-size=3 ! fakesink sync=true",
        common::model().display()
    ));
    let last = Arc::new(Mutex::new(None));
    let l = last.clone();
    p.by_name("cam0")
        .unwrap()
        .static_pad("src")
        .unwrap()
        .add_probe(gst::PadProbeType::BUFFER, move |_, info| {
            if let Some(a) = info.buffer().and_then(|b| AnomalyInfo::from_buffer(b)) {
                *l.lock().unwrap() = Some(a.results_dropped);
            }
            gst::PadProbeReturn::Ok
        });
    // no broker at all: EOS must come (a streaming thread that waited for it would never end)
    play(&p, Duration::from_secs(60)).unwrap();
    let dropped = last.lock().unwrap().expect("frames went through");
    // room for 3 in the queue, 8 in the client's buffer, 1 in the publisher's hands
    assert!(dropped >= 30 - 3 - 8 - 1, "dropped {dropped} of 30");
}

/// A broker that asks for a login: the right one in the URL publishes; a wrong one leaves the
/// stream running and says why on the bus, without showing the password.
#[test]
fn brokers_with_a_login() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _broker = Broker::with_login(port, dir.path(), "line1", "p@ss word");
    let got = subscribe_as(
        port,
        "clsflow/login",
        "test-sub-login",
        Some(("line1", "p@ss word")),
    );
    // live at 20 frames/s: the broker's answer comes while the stream plays
    let launch = |password: &str| {
        pipeline(&format!(
            "videotestsrc is-live=true num-buffers=10 \
             ! video/x-raw,width=64,height=48,framerate=20/1 \
             ! anomalydetect name=cam0 model={} \
               results-location=mqtt://line1:{password}@127.0.0.1:{port}/clsflow/login \
             ! fakesink",
            common::model().display()
        ))
    };
    play(&launch("p%40ss%20word"), Duration::from_secs(60)).unwrap();
    assert_eq!(wait_for(&got, 10), 10, "one message per frame");

    let warnings = play_for_warnings(&launch("wrong-secret"));
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("user name and password")),
        "{warnings:?}"
    );
    assert!(!warnings.iter().any(|w| w.contains("wrong-secret")));
    assert_eq!(
        got.lock().unwrap().len(),
        10,
        "nothing from the refused login"
    );
}

/// A broker that speaks TLS only and asks for a client certificate: with its authority and a
/// client certificate, every frame arrives; without its authority, the stream still ends and the
/// bus says why.
#[test]
fn brokers_over_tls_with_client_certificates() {
    let certs = TestCerts::make();
    let (port, tls_port) = (free_port(), free_port());
    let _broker = Broker::with_tls(port, tls_port, &certs);
    let got = subscribe(port, "clsflow/tls", "test-sub-tls");
    let launch = |files: &str| {
        pipeline(&format!(
            "videotestsrc is-live=true num-buffers=10 \
             ! video/x-raw,width=64,height=48,framerate=20/1 \
             ! anomalydetect name=cam0 model={} \
               results-location=mqtts://127.0.0.1:{tls_port}/clsflow/tls {files} \
             ! fakesink",
            common::model().display()
        ))
    };
    let client = format!(
        "results-cert-file={} results-key-file={}",
        certs.path("client.pem"),
        certs.path("client.key")
    );
    let trusted = format!("results-ca-file={} {client}", certs.path("ca.pem"));
    play(&launch(&trusted), Duration::from_secs(60)).unwrap();
    assert_eq!(wait_for(&got, 10), 10, "one message per frame");
    assert_eq!(got.lock().unwrap()[9]["frame"], 9);

    // the broker's authority not trusted: a warning that says where to look, no messages
    let warnings = play_for_warnings(&launch(&client));
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("TLS") && w.contains("results-ca-file")),
        "{warnings:?}"
    );
    // the authority trusted, but no client certificate: the broker's refusal says what to set
    let ca = format!("results-ca-file={}", certs.path("ca.pem"));
    let warnings = play_for_warnings(&launch(&ca));
    assert!(
        warnings.iter().any(|w| w.contains("results-cert-file")),
        "{warnings:?}"
    );
    assert_eq!(
        got.lock().unwrap().len(),
        10,
        "nothing over the refused links"
    );
}

#[test]
fn bad_urls_are_element_errors_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let absent = dir.path().join("absent-ca.pem").display().to_string();
    let no_ca = format!("mqtts://127.0.0.1:8883/t results-ca-file={absent}");
    let plain_with_ca = format!("mqtt://127.0.0.1:1883/t results-ca-file={absent}");
    for (url, needle) in [
        ("mqtt://127.0.0.1:1883", "topic"),
        ("mqtt://nobody@127.0.0.1:1883/t", "CLSFLOW_MQTT_PASSWORD"),
        (no_ca.as_str(), "absent-ca.pem"),
        (plain_with_ca.as_str(), "for an mqtts://"),
    ] {
        let p = pipeline(&format!(
            "videotestsrc num-buffers=2 ! anomalydetect model={} results-location={url} ! fakesink",
            common::model().display()
        ));
        let e = play(&p, Duration::from_secs(30)).unwrap_err();
        assert!(e.contains(needle), "{url}: {e}");
    }
}
