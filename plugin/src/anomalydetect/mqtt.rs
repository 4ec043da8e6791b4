//! `results-location=mqtt://host:port/topic`: one JSON message per processed frame to an MQTT
//! broker, QoS 1 (at least once), as DL Streamer's `gvametapublish` does.
//!
//! The streaming thread only appends to a bounded queue and never waits: a publisher thread
//! hands the messages to the MQTT client, and a connection thread keeps the connection up,
//! reconnecting with a backoff from 0.5 s to 10 s while the broker is away. When the queue is
//! full (the broker away for long), the oldest messages are dropped and counted.

use rumqttc::{Client, ConnectReturnCode, ConnectionError, Event, MqttOptions, Packet, QoS};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// Where the password comes from when the URL names only the user (`mqtt://user@host/topic`),
/// so that it stays out of pipeline descriptions, process lists and logs.
pub const PASSWORD_ENV: &str = "CLSFLOW_MQTT_PASSWORD";

/// Where to publish: broker host, port and topic, from `mqtt://[user[:password]@]host[:port]/topic`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MqttTarget {
    /// Broker host name or address.
    pub host: String,
    /// Broker port (1883 when the URL has none).
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
    /// Parses `mqtt://[user[:password]@]host[:port]/topic` (user and password percent-encoded;
    /// with a user and no password, the password is read from [`PASSWORD_ENV`]); `mqtts://`
    /// is refused (this build has no TLS). Errors show the URL with its password hidden.
    pub fn parse(url: &str) -> Result<Self, String> {
        Self::parse_with(url, std::env::var(PASSWORD_ENV).ok())
    }

    /// [`Self::parse`] with the environment's password given.
    pub fn parse_with(url: &str, env_password: Option<String>) -> Result<Self, String> {
        let shown = redacted(url);
        if url.starts_with("mqtts://") {
            return Err(format!(
                "{shown}: mqtts (MQTT over TLS) is not built into this plugin; publish with \
                 mqtt:// to a broker on a trusted network (for example a local one that bridges \
                 over TLS)"
            ));
        }
        let rest = url
            .strip_prefix("mqtt://")
            .ok_or_else(|| format!("{shown}: not an mqtt:// URL"))?;
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
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) => (
                h,
                p.parse::<u16>()
                    .map_err(|_| format!("{shown}: {p:?} is not a port number"))?,
            ),
            None => (authority, 1883),
        };
        if host.is_empty() {
            return Err(format!("{shown}: no broker host"));
        }
        Ok(MqttTarget {
            host: host.to_string(),
            port,
            topic: topic.to_string(),
            credentials,
        })
    }
}

/// `url` with the password of its `user:password@` part replaced by `***`, for messages.
pub fn redacted(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((login, host)) => match login.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}{path}"),
            None => url.to_string(),
        },
        None => url.to_string(),
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

/// What a connection failure means to the person who set up the pipeline.
fn failure_text(e: &ConnectionError) -> String {
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
    /// Starts publishing to `target` as `client_id`, holding at most `capacity` messages while
    /// the broker cannot take them. `warn` is told about connection failures (once per outage).
    pub fn start(
        target: MqttTarget,
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
                                warn(failure_text(&e));
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
        assert!(
            MqttTarget::parse("mqtts://h/t")
                .unwrap_err()
                .contains("TLS")
        );
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
    }
}
