//! `results-location`: one JSON line per processed frame appended to a file, flushed per line,
//! so that other tools can follow it (`tail -f`) and a crash loses at most the frame in flight;
//! or, for an `mqtt://` or `mqtts://` location, one message per frame to a broker
//! ([`super::mqtt`]).

use super::mqtt::{MqttResults, MqttTarget, TlsFiles};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

/// An open results file.
#[derive(Debug)]
pub struct ResultsFile {
    path: PathBuf,
    file: File,
}

impl ResultsFile {
    /// Opens `path` for appending (created if absent; emptied first only with `truncate`).
    /// The error names the path and the reason.
    pub fn open(path: &Path, truncate: bool) -> Result<Self, String> {
        let mut options = OpenOptions::new();
        options.create(true);
        if truncate {
            options.write(true).truncate(true);
        } else {
            options.append(true);
        }
        let file = options
            .open(path)
            .map_err(|e| format!("cannot open results file {}: {e}", path.display()))?;
        Ok(ResultsFile {
            path: path.to_path_buf(),
            file,
        })
    }

    /// Appends one line and flushes it (one write, so lines of several elements appending to one
    /// file do not interleave).
    pub fn write_line(&mut self, value: &serde_json::Value) -> Result<(), String> {
        let mut line = value.to_string();
        line.push('\n');
        self.file
            .write_all(line.as_bytes())
            .and_then(|()| self.file.flush())
            .map_err(|e| format!("cannot write to results file {}: {e}", self.path.display()))
    }
}

/// Where an element's results go.
pub enum ResultsSink {
    /// A JSON-lines file.
    File(ResultsFile),
    /// An MQTT broker.
    Mqtt(MqttResults),
}

/// What [`ResultsSink::open`] needs besides the location.
pub struct SinkOptions<'a> {
    /// Append to an existing file rather than emptying it.
    pub append: bool,
    /// The MQTT client id.
    pub client_id: &'a str,
    /// Messages held for an unreachable broker.
    pub queue_size: usize,
    /// The TLS files of an `mqtts://` location.
    pub tls: &'a TlsFiles,
}

impl ResultsSink {
    /// A file path, or an `mqtt[s]://host:port/topic` URL; `warn` hears of broker outages.
    /// TLS files are refused with any other location than `mqtts://`, which they would not
    /// protect.
    pub fn open(
        location: &str,
        options: &SinkOptions,
        warn: impl Fn(String) + Send + 'static,
    ) -> Result<Self, String> {
        let is_mqtt = location.starts_with("mqtt://") || location.starts_with("mqtts://");
        if options.tls.any() && !location.starts_with("mqtts://") {
            return Err(format!(
                "results-ca-file, results-cert-file and results-key-file are for an mqtts:// \
                 results-location; {} is not one",
                super::mqtt::redacted(location)
            ));
        }
        if is_mqtt {
            let target = MqttTarget::parse(location)?;
            let tls = target.tls.then(|| options.tls.setup()).transpose()?;
            Ok(ResultsSink::Mqtt(MqttResults::start(
                target,
                tls,
                options.client_id.to_string(),
                options.queue_size,
                warn,
            )))
        } else {
            Ok(ResultsSink::File(ResultsFile::open(
                Path::new(location),
                !options.append,
            )?))
        }
    }

    /// Sends one frame's results; returns how many were dropped so far (MQTT only).
    pub fn send(&mut self, value: &serde_json::Value) -> Result<u64, String> {
        match self {
            ResultsSink::File(f) => f.write_line(value).map(|()| 0),
            ResultsSink::Mqtt(m) => Ok(m.send(value)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_unless_asked_to_truncate() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r.jsonl");
        std::fs::write(&p, "{\"old\":1}\n").unwrap();
        let mut f = ResultsFile::open(&p, false).unwrap();
        f.write_line(&serde_json::json!({"frame": 0})).unwrap();
        drop(f);
        assert_eq!(
            std::fs::read_to_string(&p).unwrap(),
            "{\"old\":1}\n{\"frame\":0}\n"
        );
        let mut f = ResultsFile::open(&p, true).unwrap();
        f.write_line(&serde_json::json!({"frame": 1})).unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "{\"frame\":1}\n");
        let e = ResultsFile::open(&dir.path().join("no/such/dir/r.jsonl"), false).unwrap_err();
        assert!(e.contains("no/such/dir"), "{e}");
    }
}
