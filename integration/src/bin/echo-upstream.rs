//! The echo upstream as a standalone server, for `make demo` and the
//! container demos: `echo-upstream [--port N]` (default 8081; 0 = any free
//! port) on 127.0.0.1, or `echo-upstream --listen ADDR:PORT` (e.g.
//! 0.0.0.0:8080 inside a container). It logs nothing per request.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use tokenhub_integration::EchoUpstream;

const USAGE: &str = "usage: echo-upstream [--port N | --listen ADDR:PORT]";

fn parse_addr(args: &[String]) -> Result<SocketAddr, String> {
    let loopback = |port| SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port);
    match args {
        [] => Ok(loopback(8081)),
        [flag, value] if flag == "--port" => value.parse().map(loopback).map_err(|_| format!("bad port: {value}")),
        [flag, value] if flag == "--listen" => value.parse().map_err(|_| format!("bad address: {value}")),
        _ => Err(USAGE.to_string()),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let addr = match parse_addr(&args) {
        Ok(addr) => addr,
        Err(msg) => {
            eprintln!("{msg}");
            return ExitCode::from(2);
        }
    };
    match EchoUpstream::bind(addr) {
        Ok(echo) => {
            println!("echo-upstream listening on {}", echo.addr());
            echo.join();
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("echo-upstream: cannot listen on {addr}: {e}");
            ExitCode::FAILURE
        }
    }
}
