//! `sotto-load` end to end: each mode that relays messages runs a small load to completion and
//! reports what it measured, CPU time included.

use std::process::Command;

fn run(mode: &str, extra: &[&str]) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_sotto-load"))
        .args(extra)
        .args([
            "--mode",
            mode,
            "--clients",
            "2",
            "--messages",
            "5",
            "--size",
            "64",
        ])
        .output()
        .expect("sotto-load starts");
    assert!(
        out.status.success(),
        "sotto-load --mode {mode} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<_> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "one JSON line, got {stdout:?}");
    serde_json::from_str(lines[0]).unwrap()
}

#[test]
fn each_relayed_mode_reports_its_rate_latency_and_cpu_time() {
    for (mode, extra, transport) in [
        ("raw", &[][..], "ws"),
        ("relay", &[][..], "wss"),
        ("normal", &[][..], "wss"),
        ("relay", &["--transport", "ws"][..], "ws"),
    ] {
        let r = run(mode, extra);
        assert_eq!(r["mode"], mode);
        assert_eq!(r["transport"], transport, "{r}");
        assert_eq!(r["clients"], 2);
        assert_eq!(r["messages"], 5);
        assert!(r["msgs_per_sec"].as_f64().unwrap() > 0.0, "{r}");
        assert!(
            r["p50_us"].as_u64().unwrap() <= r["p99_us"].as_u64().unwrap(),
            "{r}"
        );
        // Ten messages cannot be carried without the processor doing some work for them.
        assert!(r["cpu_us_per_msg"].as_f64().unwrap() > 0.0, "{r}");
        assert!(r["cores_busy"].as_f64().unwrap() > 0.0, "{r}");
    }
}
