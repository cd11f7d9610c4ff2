//! The echo upstream as a standalone server, for `make demo`:
//! `echo-upstream [--port N]` (default 8081; 0 = any free port) on 127.0.0.1.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use tokenhub_integration::EchoUpstream;

fn parse_port(args: &[String]) -> Result<u16, String> {
    match args {
        [] => Ok(8081),
        [flag, value] if flag == "--port" => value.parse().map_err(|_| format!("bad port: {value}")),
        _ => Err("usage: echo-upstream [--port N]".to_string()),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let port = match parse_port(&args) {
        Ok(port) => port,
        Err(msg) => {
            eprintln!("{msg}");
            return ExitCode::from(2);
        }
    };
    let addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port);
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
