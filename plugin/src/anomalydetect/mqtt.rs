//! `results-location=mqtt://host:port/topic`: one JSON message per processed frame to an MQTT
//! broker, QoS 1 (at least once), as DL Streamer's `gvametapublish` does; `mqtts://` over TLS
//! (the system's OpenSSL, its trusted authorities plus `results-ca-file`, and a client
//! certificate where the broker asks for one).
//!
//! The streaming thread only appends to a bounded queue and never waits: a publisher thread
//! hands the messages to the MQTT client, and a connection thread keeps the connection up,
//! reconnecting with a backoff from 0.5 s to 10 s while the broker is away. When the queue is
//! full (the broker away for long), the oldest messages are dropped and counted.

use rumqttc::tokio_native_tls::native_tls::{Certificate, Identity, TlsConnector};
use rumqttc::{
    Client, ConnectReturnCode, ConnectionError, Event, MqttOptions, Packet, QoS, TlsConfiguration,
    Transport,
};
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// Where the password comes from when the URL names only the user (`mqtt://user@host/topic`),
/// so that it stays out of pipeline descriptions, process lists and logs.
pub const PASSWORD_ENV: &str = "CLSFLOW_MQTT_PASSWORD";

/// Where to publish: broker host, port and topic, from
/// `mqtt[s]://[user[:password]@]host[:port]/topic`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MqttTarget {
    /// Over TLS (`mqtts://`).
    pub tls: bool,
    /// Broker host name or address (with TLS, the name its certificate must carry).
    pub host: String,
    /// Broker port (1883 when the URL has none, 8883 with TLS).
    pub port: u16,
    /// Topic the messages go to (the URL's path without its leading slash).
    pub topic: String,
    /// User name and password for brokers that ask for them.
    pub credentials: Option<Credentials>,
}

/// A broker login; its Debug form hides the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// User name.
    pub user: String,
    /// Password.
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Credentials {{ user: {:?}, password: \"***\" }}",
            self.user
        )
    }
}

impl MqttTarget {
    /// Parses `mqtt[s]://[user[:password]@]host[:port]/topic` (user and password
    /// percent-encoded; with a user and no password, the password is read from
    /// [`PASSWORD_ENV`]). Errors show the URL with its password hidden.
    pub fn parse(url: &str) -> Result<Self, String> {
        Self::parse_with(url, std::env::var(PASSWORD_ENV).ok())
    }

    /// [`Self::parse`] with the environment's password given.
    pub fn parse_with(url: &str, env_password: Option<String>) -> Result<Self, String> {
        let shown = redacted(url);
        let (tls, rest) = match (url.strip_prefix("mqtt://"), url.strip_prefix("mqtts://")) {
            (Some(rest), _) => (false, rest),
            (_, Some(rest)) => (true, rest),
            _ => return Err(format!("{shown}: not an mqtt:// or mqtts:// URL")),
        };
        let (authority, topic) = rest
            .split_once('/')
            .ok_or_else(|| format!("{shown}: no topic (expected mqtt://host:port/topic)"))?;
        if topic.is_empty() || topic.contains(['+', '#']) {
            return Err(format!(
                "{shown}: the topic must be non-empty and without wildcards (+, #)"
            ));
        }
        let (login, authority) = match authority.rsplit_once('@') {
            Some((login, a)) => (Some(login), a),
            None => (None, authority),
        };
        // the port is read once: an unreadable one is an error below, or part of a cut login
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some((p, p.parse::<u16>().ok()))),
            None => (authority, None),
        };
        if looks_like_split_login(topic, matches!(port, Some((_, None)))) {
            return Err(format!(
                "{shown}: this looks like a login whose user name or password holds a '/': \
                 write it as %2F (unescaped, a '/' ends the broker's address)"
            ));
        }
        let credentials = login
            .map(|login| {
                let (user, password) = match login.split_once(':') {
                    Some((u, p)) => (u, Some(percent_decoded(p, &shown)?)),
                    None => (login, None),
                };
                let user = percent_decoded(user, &shown)?;
                if user.is_empty() {
                    return Err(format!("{shown}: empty user name before '@'"));
                }
                let password = password.or(env_password).ok_or_else(|| {
                    format!(
                        "{shown}: no password for user {user:?}: give it in the URL \
                         (user:password@) or in the environment variable {PASSWORD_ENV}"
                    )
                })?;
                Ok(Credentials { user, password })
            })
            .transpose()?;
        let port = match port {
            Some((_, Some(port))) => port,
            Some((p, None)) => return Err(format!("{shown}: {p:?} is not a port number")),
            None => {
                if tls {
                    8883
                } else {
                    1883
                }
            }
        };
        if host.is_empty() {
            return Err(format!("{shown}: no broker host"));
        }
        Ok(MqttTarget {
            tls,
            host: host.to_string(),
            port,
            topic: topic.to_string(),
            credentials,
        })
    }
}

/// Whether a URL's topic and its host's unreadable port (`bad_port`: a ':' followed by no
/// port number) are the rest of a `user:password@host/topic` cut short by an unescaped '/' in
/// the user name or the password: an '@' in the topic after a ':' in it, or after a bad port.
fn looks_like_split_login(topic: &str, bad_port: bool) -> bool {
    topic
        .rfind('@')
        .is_some_and(|at| bad_port || topic[..at].contains(':'))
}

/// `url` with the password of its `user:password@` part replaced by `***`, for messages:
/// everything from the first ':' to the last '@', so that a login cut short by an unescaped '/'
/// ([`looks_like_split_login`]) or holding unescaped ':' or '@' stays hidden too (as does the
/// port of a rare `mqtt://host:port/topic@x`, a harmless excess).
pub fn redacted(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    match (rest.find(':'), rest.rfind('@')) {
        (Some(colon), Some(at)) if colon < at => {
            format!("{scheme}://{}:***{}", &rest[..colon], &rest[at..])
        }
        _ => url.to_string(),
    }
}

/// `%XX` escapes decoded (a user name or password may hold `:`, `@` or `/` that way).
fn percent_decoded(s: &str, shown: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| {
                    format!("{shown}: a '%' in the login is not followed by two hex digits")
                })?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("{shown}: the login is not UTF-8 once decoded"))
}

/// The files of an `mqtts://` connection, PEM each: authorities to trust besides the
/// system's, and a client certificate with its key for brokers that ask for one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// Certificates of the authorities that may sign the broker's certificate.
    pub ca_file: Option<PathBuf>,
    /// The client's certificate (chain).
    pub cert_file: Option<PathBuf>,
    /// The client certificate's private key, unencrypted PKCS#8 (`BEGIN PRIVATE KEY`).
    pub key_file: Option<PathBuf>,
}

impl TlsFiles {
    /// Whether any file is set.
    pub fn any(&self) -> bool {
        self.ca_file.is_some() || self.cert_file.is_some() || self.key_file.is_some()
    }

    /// The TLS set-up these files make: every file read and checked now, so that a wrong one
    /// is an error naming it when the element starts, not a handshake failure later.
    pub fn setup(&self) -> Result<TlsSetup, String> {
        let mut builder = TlsConnector::builder();
        if let Some(path) = &self.ca_file {
            let pem = read(path, "results-ca-file")?;
            let blocks = pem_certificates(&pem);
            if blocks.is_empty() {
                return Err(format!(
                    "results-ca-file {}: no PEM certificate (BEGIN CERTIFICATE) in it",
                    path.display()
                ));
            }
            for block in blocks {
                let cert = Certificate::from_pem(block.as_bytes()).map_err(|e| {
                    format!(
                        "results-ca-file {}: not a certificate ({e})",
                        path.display()
                    )
                })?;
                builder.add_root_certificate(cert);
            }
        }
        match (&self.cert_file, &self.key_file) {
            (Some(cert), Some(key)) => {
                let (c, k) = (
                    read(cert, "results-cert-file")?,
                    read(key, "results-key-file")?,
                );
                let identity = Identity::from_pkcs8(c.as_bytes(), k.as_bytes()).map_err(|e| {
                    format!(
                        "results-cert-file {} and results-key-file {}: not a PEM certificate \
                         and its unencrypted PKCS#8 key (BEGIN PRIVATE KEY) ({e}); an RSA or \
                         EC key converts with `openssl pkcs8 -topk8 -nocrypt -in {} -out KEY`",
                        cert.display(),
                        key.display(),
                        key.display()
                    )
                })?;
                builder.identity(identity);
            }
            (None, None) => {}
            (Some(_), None) => {
                return Err("results-cert-file is set without results-key-file".into());
            }
            (None, Some(_)) => {
                return Err("results-key-file is set without results-cert-file".into());
            }
        }
        let connector = builder
            .build()
            .map_err(|e| format!("cannot set up TLS for the MQTT broker: {e}"))?;
        Ok(TlsSetup {
            connector,
            client_certificate: self.cert_file.is_some(),
        })
    }
}

/// A checked TLS set-up for an `mqtts://` broker.
pub struct TlsSetup {
    connector: TlsConnector,
    client_certificate: bool,
}

/// A PEM file's contents; the error names the property and the file.
fn read(path: &Path, property: &str) -> Result<String, String> {
    std::fs::read_to_string(path)
        .map_err(|e| format!("{property} {}: cannot read it ({e})", path.display()))
}

/// Each `BEGIN CERTIFICATE` block of a PEM text (a CA file often holds a chain).
fn pem_certificates(pem: &str) -> Vec<&str> {
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let mut out = Vec::new();
    let mut rest = pem;
    while let Some(start) = rest.find(BEGIN) {
        let Some(len) = rest[start..].find(END) else {
            break;
        };
        let end = start + len + END.len();
        out.push(&rest[start..end]);
        rest = &rest[end..];
    }
    out
}

/// What a connection failure means to the person who set up the pipeline; `no_client_cert`:
/// over TLS without a client certificate, which a broker that asks for one answers by closing
/// the connection (with a TLS alert that does not always arrive first, so the hint goes with
/// every failure of such a connection).
fn failure_text(e: &ConnectionError, no_client_cert: bool) -> String {
    match e {
        ConnectionError::ConnectionRefused(
            code @ (ConnectReturnCode::BadUserNamePassword | ConnectReturnCode::NotAuthorized),
        ) => format!(
            "MQTT broker refused the login ({code:?}): check the user name and password in \
             results-location or {PASSWORD_ENV}; retrying"
        ),
        ConnectionError::ConnectionRefused(code) => {
            format!("MQTT broker refused the connection ({code:?}); retrying")
        }
        ConnectionError::Tls(e) => format!(
            "TLS connection to the MQTT broker failed ({e}): check that results-ca-file holds \
             the authority that signed the broker's certificate and that results-location names \
             the host that certificate is for; retrying"
        ),
        e if no_client_cert => format!(
            "MQTT broker unreachable ({e}); if it asks for a client certificate, set \
             results-cert-file and results-key-file; reconnecting"
        ),
        e => format!("MQTT broker unreachable ({e}); reconnecting"),
    }
}

/// Messages waiting for the publisher thread.
struct Queue {
    pending: VecDeque<String>,
    closed: bool,
}

/// A running publisher: the queue, the count of dropped messages and the threads' stop flag.
pub struct MqttResults {
    queue: Arc<(Mutex<Queue>, Condvar)>,
    capacity: usize,
    dropped: Arc<AtomicU64>,
}

impl MqttResults {
    /// Starts publishing to `target` as `client_id` (over `tls` when given: an `mqtts://` target),
    /// holding at most `capacity` messages while the broker cannot take them. `warn` is told
    /// about connection failures (once per outage).
    pub fn start(
        target: MqttTarget,
        tls: Option<TlsSetup>,
        client_id: String,
        capacity: usize,
        warn: impl Fn(String) + Send + 'static,
    ) -> Self {
        let mut options = MqttOptions::new(&client_id, &target.host, target.port);
        options.set_keep_alive(Duration::from_secs(10));
        options.set_max_packet_size(16 << 20, 16 << 20);
        if let Some(c) = &target.credentials {
            options.set_credentials(&c.user, &c.password);
        }
        let no_client_cert = tls.as_ref().is_some_and(|t| !t.client_certificate);
        if let Some(t) = tls {
            options.set_transport(Transport::tls_with_config(
                TlsConfiguration::NativeConnector(t.connector),
            ));
        }
        // a small client buffer: while the broker is away, results-queue-size governs what is kept
        let (client, mut connection) = Client::new(options, 8);
        let stopping = Arc::new(AtomicBool::new(false));
        let stop = stopping.clone();
        std::thread::Builder::new()
            .name("clsflow-mqtt-connection".into())
            .spawn(move || {
                let mut backoff = Duration::from_millis(500);
                let mut down = false;
                // ends when the publisher drops the client
                for event in connection.iter() {
                    match event {
                        Ok(Event::Incoming(Packet::ConnAck(_))) => {
                            backoff = Duration::from_millis(500);
                            down = false;
                        }
                        Ok(_) => {}
                        Err(e) => {
                            if stop.load(Ordering::SeqCst) {
                                break;
                            }
                            if !down {
                                warn(failure_text(&e, no_client_cert));
                                down = true;
                            }
                            std::thread::sleep(backoff);
                            backoff = (backoff * 2).min(Duration::from_secs(10));
                        }
                    }
                }
            })
            .expect("cannot start the MQTT connection thread");
        let queue = Arc::new((
            Mutex::new(Queue {
                pending: VecDeque::new(),
                closed: false,
            }),
            Condvar::new(),
        ));
        let q = queue.clone();
        let topic = target.topic.clone();
        let stop = stopping.clone();
        std::thread::Builder::new()
            .name("clsflow-mqtt-publish".into())
            .spawn(move || publish_loop(&q, &client, &topic, &stop))
            .expect("cannot start the MQTT publisher thread");
        MqttResults {
            queue,
            capacity: capacity.max(1),
            dropped: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Queues one message without waiting; returns how many messages were dropped so far.
    pub fn send(&self, value: &serde_json::Value) -> u64 {
        let (lock, ready) = &*self.queue;
        let mut q = lock.lock().unwrap_or_else(|e| e.into_inner());
        q.pending.push_back(value.to_string());
        while q.pending.len() > self.capacity {
            q.pending.pop_front();
            self.dropped.fetch_add(1, Ordering::SeqCst);
        }
        drop(q);
        ready.notify_one();
        self.dropped.load(Ordering::SeqCst)
    }
}

impl Drop for MqttResults {
    /// Lets the publisher hand over what is queued, then both threads end on their own: a
    /// broker that is away never holds up the element's state change.
    fn drop(&mut self) {
        let (lock, ready) = &*self.queue;
        lock.lock().unwrap_or_else(|e| e.into_inner()).closed = true;
        ready.notify_one();
    }
}

/// The publisher thread: takes queued messages in order and hands them to the client, waiting
/// (not the streaming thread) while the client's own buffer is full.
fn publish_loop(queue: &(Mutex<Queue>, Condvar), client: &Client, topic: &str, stop: &AtomicBool) {
    let (lock, ready) = queue;
    loop {
        let message = {
            let mut q = lock.lock().unwrap_or_else(|e| e.into_inner());
            loop {
                if let Some(m) = q.pending.pop_front() {
                    break Some(m);
                }
                if q.closed {
                    break None;
                }
                q = ready.wait(q).unwrap_or_else(|e| e.into_inner());
            }
        };
        let Some(payload) = message else {
            stop.store(true, Ordering::SeqCst);
            let _ = client.try_disconnect();
            return;
        };
        // try_publish never blocks; while the client's buffer is full, wait here and keep an
        // eye on the element closing (with the broker away the message is then dropped)
        while client
            .try_publish(topic, QoS::AtLeastOnce, false, payload.clone())
            .is_err()
        {
            if lock.lock().unwrap_or_else(|e| e.into_inner()).closed {
                stop.store(true, Ordering::SeqCst);
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            MqttTarget::parse("mqtt://broker.local:1884/line1/cam0").unwrap(),
            MqttTarget {
                tls: false,
                host: "broker.local".into(),
                port: 1884,
                topic: "line1/cam0".into(),
                credentials: None,
            }
        );
        assert_eq!(MqttTarget::parse("mqtt://10.0.0.2/t").unwrap().port, 1883);
        for bad in [
            "mqtt://host:99999/t",
            "mqtt://host:1883",
            "mqtt://host/",
            "mqtt:///t",
            "mqtt://h/a/#",
            "http://h/t",
        ] {
            assert!(MqttTarget::parse(bad).is_err(), "{bad}");
        }
        let t = MqttTarget::parse("mqtts://u:s3cret@broker.local/t").unwrap();
        assert!(t.tls);
        assert_eq!((t.host.as_str(), t.port), ("broker.local", 8883));
        assert_eq!(redacted("mqtts://u:s3cret@b/t"), "mqtts://u:***@b/t");
    }

    #[test]
    fn tls_files_are_checked_before_any_connection() {
        let dir = tempfile::tempdir().unwrap();
        let file = |name: &str, text: &str| {
            let p = dir.path().join(name);
            std::fs::write(&p, text).unwrap();
            Some(p)
        };
        let check = |files: TlsFiles, needles: &[&str]| {
            let e = files.setup().err().expect("refused");
            for n in needles {
                assert!(e.contains(n), "{n} not in {e}");
            }
        };
        // no files: the system's authorities
        assert!(TlsFiles::default().setup().is_ok());
        check(
            TlsFiles {
                ca_file: Some(dir.path().join("absent.pem")),
                ..TlsFiles::default()
            },
            &["results-ca-file", "absent.pem"],
        );
        check(
            TlsFiles {
                ca_file: file("key.pem", "-----BEGIN PRIVATE KEY-----\nAAAA\n"),
                ..TlsFiles::default()
            },
            &["results-ca-file", "key.pem", "BEGIN CERTIFICATE"],
        );
        check(
            TlsFiles {
                ca_file: file(
                    "junk.pem",
                    "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n",
                ),
                ..TlsFiles::default()
            },
            &["junk.pem", "not a certificate"],
        );
        check(
            TlsFiles {
                cert_file: file("c.pem", ""),
                ..TlsFiles::default()
            },
            &["without results-key-file"],
        );
        check(
            TlsFiles {
                cert_file: file("c.pem", "x"),
                key_file: file("k.pem", "y"),
                ..TlsFiles::default()
            },
            &["c.pem", "k.pem", "PKCS#8"],
        );
    }

    proptest::proptest! {
        /// Whatever a pipeline description holds, parsing gives a target or an error, never a
        /// panic, and neither the error nor the target's Debug form shows a URL's password.
        #[test]
        fn any_location_parses_or_is_refused_without_showing_the_password(
            scheme in proptest::sample::select(vec!["mqtt://", "mqtts://", "", "mqtt:/"]),
            user in "[a-z%@:/ ]{0,6}",
            tail in "[a-z/]{0,3}",
            rest in "\\PC{0,24}",
        ) {
            let url = format!("{scheme}{user}:Pw9secret{tail}@{rest}");
            match MqttTarget::parse_with(&url, None) {
                Ok(t) => {
                    let shown = format!("{t:?}");
                    proptest::prop_assert!(!shown.contains("Pw9secret"), "{}", shown)
                }
                Err(e) => proptest::prop_assert!(
                    // (other locations are files, never parsed as URLs)
                    !e.contains("Pw9secret")
                        || !(url.starts_with("mqtt://") || url.starts_with("mqtts://")),
                    "{}", e
                ),
            }
            let _ = pem_certificates(&rest);
        }
    }

    #[test]
    fn pem_blocks_are_split() {
        let one = "-----BEGIN CERTIFICATE-----\nAA\n-----END CERTIFICATE-----";
        let two = format!("subject=x\n{one}\n\n{one}\n");
        assert_eq!(pem_certificates(&two), vec![one, one]);
        assert!(pem_certificates("-----BEGIN CERTIFICATE-----\nAA").is_empty());
    }

    #[test]
    fn logins_from_the_url_or_the_environment_and_never_shown() {
        let login = |user: &str, password: &str| {
            Some(Credentials {
                user: user.into(),
                password: password.into(),
            })
        };
        let t = MqttTarget::parse_with("mqtt://line1:s3cret@broker:1884/t", None).unwrap();
        assert_eq!((t.host.as_str(), t.port), ("broker", 1884));
        assert_eq!(t.credentials, login("line1", "s3cret"));
        // escapes, and an '@' or ':' inside the password
        let t = MqttTarget::parse_with("mqtt://cam%2F1:p%40ss%3Aword@10.0.0.2/t", None).unwrap();
        assert_eq!(t.credentials, login("cam/1", "p@ss:word"));
        // the user alone: the password from the environment, which a URL password overrides
        let env = Some("from-env".to_string());
        let t = MqttTarget::parse_with("mqtt://line1@broker/t", env.clone()).unwrap();
        assert_eq!(t.credentials, login("line1", "from-env"));
        let t = MqttTarget::parse_with("mqtt://line1:url@broker/t", env).unwrap();
        assert_eq!(t.credentials, login("line1", "url"));
        let e = MqttTarget::parse_with("mqtt://line1@broker/t", None).unwrap_err();
        assert!(e.contains(PASSWORD_ENV) && e.contains("line1"), "{e}");
        // the password never appears in errors or Debug output
        for bad in [
            "mqtt://u:s3cret@broker:notaport/t",
            "mqtt://u:s3cret@broker",
            "mqtt://u:s3cret%zz@broker/t",
            "mqtt://:s3cret@broker/t",
        ] {
            let e = MqttTarget::parse_with(bad, None).unwrap_err();
            assert!(!e.contains("s3cret") && e.contains(":***@"), "{e}");
        }
        let t = MqttTarget::parse_with("mqtt://u:s3cret@b/t", None).unwrap();
        assert!(!format!("{t:?}").contains("s3cret"));
        assert_eq!(redacted("mqtt://u:s3cret@b:1/t/x"), "mqtt://u:***@b:1/t/x");
        assert_eq!(redacted("mqtt://b:1/t"), "mqtt://b:1/t");
        // a '/' left unescaped in the user name or the password cuts the login short: refused,
        // and the password stays hidden; an '@' in a topic is fine
        for cut in [
            "mqtt://team/line:s3cret@broker/t",
            "mqtt://u:s3/cret@broker/t",
        ] {
            let e = MqttTarget::parse_with(cut, None).unwrap_err();
            assert!(e.contains("%2F") && !e.contains("s3"), "{e}");
        }
        for topic in ["mqtt://broker/plant@site/x", "mqtt://broker:1883/a@b"] {
            assert!(MqttTarget::parse_with(topic, None).is_ok(), "{topic}");
        }
    }
}
