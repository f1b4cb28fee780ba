use std::collections::BTreeMap;
use std::time::Instant;
use salesloop::domain::detector::Detector;
fn main() {
    let root = salesloop_tests::workspace_root();
    let raw = std::fs::read_to_string(root.join("benches/data/casino/utterances.jsonl")).unwrap();
    let texts: Vec<String> = raw.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let d = Detector::builtin();
    let cal = BTreeMap::new();
    let mut times = Vec::new();
    let mut n = 0usize;
    for _ in 0..3 { for t in &texts { let s = Instant::now(); n += std::hint::black_box(d.detect(t, 1, 0.7, &cal)).len(); times.push(s.elapsed().as_nanos() as u64); } }
    let mut tc = Vec::new(); let mut ts = Vec::new();
    for t in &texts { let s = Instant::now(); std::hint::black_box(d.catalog.detect(t, 0.0, &cal)); tc.push(s.elapsed().as_nanos() as u64);
        let s = Instant::now(); std::hint::black_box(d.score(t, 1)); ts.push(s.elapsed().as_nanos() as u64); }
    tc.sort(); ts.sort();
    println!("cues mean {:.1} p99 {:.1}; model mean {:.1} p99 {:.1}", tc.iter().sum::<u64>() as f64/tc.len() as f64/1e3, tc[tc.len()*99/100] as f64/1e3, ts.iter().sum::<u64>() as f64/ts.len() as f64/1e3, ts[ts.len()*99/100] as f64/1e3);
    times.sort();
    let mean = times.iter().sum::<u64>() as f64 / times.len() as f64;
    println!("n {} msgs {} mean {:.1}us p50 {:.1} p99 {:.1} max {:.1} dets {}", times.len(), texts.len(), mean/1e3, times[times.len()/2] as f64/1e3, times[times.len()*99/100] as f64/1e3, *times.last().unwrap() as f64/1e3, n);
}
