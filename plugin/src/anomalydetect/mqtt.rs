//! `results-location=mqtt://host:port/topic`: one JSON message per processed frame to an MQTT
//! broker, QoS 1 (at least once), as DL Streamer's `gvametapublish` does.
//!
//! The streaming thread only appends to a bounded queue and never waits: a publisher thread
//! hands the messages to the MQTT client, and a connection thread keeps the connection up,
//! reconnecting with a backoff from 0.5 s to 10 s while the broker is away. When the queue is
//! full (the broker away for long), the oldest messages are dropped and counted.

use rumqttc::{Client, Event, MqttOptions, Packet, QoS};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// Where to publish: broker host, port and topic, from `mqtt://host[:port]/topic`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MqttTarget {
    /// Broker host name or address.
    pub host: String,
    /// Broker port (1883 when the URL has none).
    pub port: u16,
    /// Topic the messages go to (the URL's path without its leading slash).
    pub topic: String,
}

impl MqttTarget {
    /// Parses `mqtt://host[:port]/topic`; `mqtts://` is refused (this build has no TLS).
    pub fn parse(url: &str) -> Result<Self, String> {
        if url.starts_with("mqtts://") {
            return Err(format!(
                "{url}: mqtts (MQTT over TLS) is not built into this plugin; publish with mqtt:// \
                 to a broker on a trusted network (for example a local one that bridges over TLS)"
            ));
        }
        let rest = url
            .strip_prefix("mqtt://")
            .ok_or_else(|| format!("{url}: not an mqtt:// URL"))?;
        let (authority, topic) = rest
            .split_once('/')
            .ok_or_else(|| format!("{url}: no topic (expected mqtt://host:port/topic)"))?;
        if topic.is_empty() || topic.contains(['+', '#']) {
            return Err(format!(
                "{url}: the topic must be non-empty and without wildcards (+, #)"
            ));
        }
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) => (
                h,
                p.parse::<u16>()
                    .map_err(|_| format!("{url}: {p:?} is not a port number"))?,
            ),
            None => (authority, 1883),
        };
        if host.is_empty() {
            return Err(format!("{url}: no broker host"));
        }
        Ok(MqttTarget {
            host: host.to_string(),
            port,
            topic: topic.to_string(),
        })
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
                                warn(format!("MQTT broker unreachable ({e}); reconnecting"));
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
                topic: "line1/cam0".into()
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
}
