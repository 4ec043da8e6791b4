//! Measurement programs behind clsflow's speed and precision choices, outside the default build
//! (`make probes` builds them; `make bench` runs `openmp_threads` and `stage2_threads`):
//!
//! - `openmp_threads`: why all libtorch work of the plugin runs on one thread;
//! - `stage2_threads`: stage 2's flows one after the other against side by side;
//! - `half_gap`: how far `half` moves a trained run's maps and verdicts on this CPU.
