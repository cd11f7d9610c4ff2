//! A fixed-rate (open-loop) HTTP/1.1 latency client, in the manner of wrk2:
//! each of C keep-alive connections sends on its own schedule (rate / C per
//! second, staggered), and every latency is measured from the moment the
//! request was *due*, not from when it was sent, so a stall is charged to
//! every request it delayed (no coordinated omission). The latency from the
//! actual send is reported too.
//!
//! usage: fixed-rate --addr HOST:PORT --rate R --duration S [--warmup S]
//!        [--connections C] [--path P] [--header 'name: value']...
//! Prints one JSON object.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

struct Args {
    addr: String,
    path: String,
    rate: f64,
    duration: f64,
    warmup: f64,
    connections: usize,
    headers: Vec<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        addr: String::new(),
        path: "/v1/chat/completions".into(),
        rate: 1000.0,
        duration: 5.0,
        warmup: 1.0,
        connections: 4,
        headers: Vec::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        let num = |v: String| v.parse::<f64>().map_err(|e| format!("{v}: {e}"));
        match flag.as_str() {
            "--addr" => a.addr = value()?,
            "--path" => a.path = value()?,
            "--rate" => a.rate = num(value()?)?,
            "--duration" => a.duration = num(value()?)?,
            "--warmup" => a.warmup = num(value()?)?,
            "--connections" => a.connections = value()?.parse().map_err(|e| format!("--connections: {e}"))?,
            "--header" => a.headers.push(value()?),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if a.addr.is_empty() || a.rate <= 0.0 || a.duration <= 0.0 || a.connections == 0 {
        return Err("--addr, a positive --rate and --duration, and --connections >= 1 are required".into());
    }
    Ok(a)
}

#[derive(Default)]
struct Samples {
    corrected_ns: Vec<u64>,
    uncorrected_ns: Vec<u64>,
    statuses: std::collections::BTreeMap<u16, u64>,
    errors: u64,
    late_sends: u64,
}

/// Sleep precision matters here: Linux's default 50 µs timer slack would be
/// charged to every latency sample, so ask for 1 ns.
fn tighten_timer_slack() {
    // SAFETY: prctl(PR_SET_TIMERSLACK) only changes this thread's slack.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong, 0, 0, 0);
    }
}

fn connect(addr: &str) -> std::io::Result<TcpStream> {
    let s = TcpStream::connect(addr)?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    Ok(s)
}

/// Reads one response; returns (status, keep-alive).
fn read_response(s: &mut TcpStream, buf: &mut Vec<u8>) -> Result<(u16, bool), String> {
    buf.clear();
    let mut chunk = [0u8; 16384];
    let head_end = loop {
        if let Some(p) = find(buf, b"\r\n\r\n") {
            break p + 4;
        }
        let n = s.read(&mut chunk).map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("connection closed".into());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = std::str::from_utf8(&buf[..head_end]).map_err(|_| "non-UTF-8 head".to_string())?;
    let status: u16 = head.get(9..12).and_then(|c| c.parse().ok()).ok_or("bad status line")?;
    let mut length = 0usize;
    let mut keep_alive = true;
    for line in head.split("\r\n").skip(1) {
        let Some((name, value)) = line.split_once(':') else { continue };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = value.parse().map_err(|_| "bad content-length")?;
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err("chunked responses are not supported".into());
        } else if name.eq_ignore_ascii_case("connection") && value.eq_ignore_ascii_case("close") {
            keep_alive = false;
        }
    }
    while buf.len() < head_end + length {
        let n = s.read(&mut chunk).map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("connection closed in body".into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok((status, keep_alive))
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn connection(args: &Args, index: usize, start: Instant, request: &[u8]) -> Samples {
    tighten_timer_slack();
    let mut out = Samples::default();
    let interval = Duration::from_secs_f64(args.connections as f64 / args.rate);
    let offset = Duration::from_secs_f64(index as f64 / args.rate);
    let warm_end = start + Duration::from_secs_f64(args.warmup);
    let end = warm_end + Duration::from_secs_f64(args.duration);
    let mut stream = connect(&args.addr).ok();
    let mut buf = Vec::with_capacity(16384);
    let mut due = start + offset;
    while due < end {
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        } else if now - due > Duration::from_micros(100) && due >= warm_end {
            out.late_sends += 1;
        }
        let s = match stream.as_mut() {
            Some(s) => s,
            None => match connect(&args.addr) {
                Ok(s) => stream.insert(s),
                Err(_) => {
                    out.errors += 1;
                    due += interval;
                    continue;
                }
            },
        };
        let sent = Instant::now();
        let result = s.write_all(request).map_err(|e| e.to_string()).and_then(|_| read_response(s, &mut buf));
        let done = Instant::now();
        match result {
            Ok((status, keep_alive)) => {
                if due >= warm_end {
                    out.corrected_ns.push((done - due).as_nanos() as u64);
                    out.uncorrected_ns.push((done - sent).as_nanos() as u64);
                    *out.statuses.entry(status).or_default() += 1;
                }
                if !keep_alive {
                    stream = None;
                }
            }
            Err(_) => {
                if due >= warm_end {
                    out.errors += 1;
                }
                stream = None;
            }
        }
        due += interval;
    }
    out
}

fn summary(mut v: Vec<u64>) -> serde_json::Value {
    if v.is_empty() {
        return serde_json::json!(null);
    }
    v.sort_unstable();
    let pct = |p: f64| {
        let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
        v[rank.clamp(1, v.len()) - 1] as f64 / 1000.0
    };
    let mean = v.iter().sum::<u64>() as f64 / v.len() as f64 / 1000.0;
    serde_json::json!({
        "p50": pct(50.0), "p90": pct(90.0), "p99": pct(99.0), "p999": pct(99.9),
        "max": *v.last().unwrap_or(&0) as f64 / 1000.0, "mean": mean,
    })
}

fn run() -> Result<(), String> {
    let args = parse_args()?;
    let mut request = format!("GET {} HTTP/1.1\r\nhost: bench\r\n", args.path);
    for h in &args.headers {
        request.push_str(h);
        request.push_str("\r\n");
    }
    request.push_str("\r\n");
    let start = Instant::now() + Duration::from_millis(50);
    let all: Vec<Samples> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..args.connections)
            .map(|i| {
                let (args, request) = (&args, request.as_bytes());
                scope.spawn(move || connection(args, i, start, request))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or_default()).collect()
    });
    let mut merged = Samples::default();
    for s in all {
        merged.corrected_ns.extend(s.corrected_ns);
        merged.uncorrected_ns.extend(s.uncorrected_ns);
        for (k, v) in s.statuses {
            *merged.statuses.entry(k).or_default() += v;
        }
        merged.errors += s.errors;
        merged.late_sends += s.late_sends;
    }
    let requests = merged.corrected_ns.len();
    let out = serde_json::json!({
        "rate_target": args.rate,
        "rate_achieved": requests as f64 / args.duration,
        "requests": requests,
        "errors": merged.errors,
        "late_sends": merged.late_sends,
        "connections": args.connections,
        "statuses": merged.statuses.iter().map(|(k, v)| (k.to_string(), serde_json::Value::from(*v))).collect::<serde_json::Map<_, _>>(),
        "latency_us": summary(merged.corrected_ns),
        "service_time_us": summary(merged.uncorrected_ns),
    });
    println!("{out}");
    Ok(())
}

fn main() {
    if let Err(e) = run() {
        eprintln!("fixed-rate: {e}");
        std::process::exit(2);
    }
}
