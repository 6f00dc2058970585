//! Process and kernel figures from Linux `/proc`, read in one place: the server's live stats,
//! the tests and the load tool all use these.
//!
//! The parsers are pure functions over the files' text, unit-tested below; the readers are
//! thin wrappers that read a file and parse it. Elsewhere than Linux every reader answers an
//! error (or `None`), and nothing here fails to build.
//!
//! Units: CPU time in seconds (`utime + stime` of `/proc/PID/stat`, in clock ticks of
//! [`CLK_TCK`]), memory in bytes.

use std::io;
use std::path::PathBuf;

/// Clock ticks per second of `/proc/PID/stat` times. `sysconf(_SC_CLK_TCK)` is 100 on every
/// Linux configuration in practice (the kernel's `USER_HZ`), and the value is part of the
/// kernel's ABI.
pub const CLK_TCK: f64 = 100.0;

/// Which process to read: this one, or another by PID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pid {
    Current,
    Of(u32),
}

impl Pid {
    fn dir(self) -> PathBuf {
        match self {
            Pid::Current => PathBuf::from("/proc/self"),
            Pid::Of(pid) => PathBuf::from(format!("/proc/{pid}")),
        }
    }
}

/// One reading of a process's CPU time and memory.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct Sample {
    /// User plus system CPU time since the process started, in seconds.
    pub cpu_secs: f64,
    /// Resident set size (`VmRSS`), in bytes.
    pub rss_bytes: u64,
}

fn bad(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("unexpected /proc format: {what}"),
    )
}

/// CPU seconds (`utime + stime`) from the text of `/proc/PID/stat`.
pub fn parse_stat_cpu_secs(stat: &str) -> io::Result<f64> {
    // The command name is in parentheses and may hold spaces or ')': fields start after the
    // last ')'. After it, state is field 3, utime 14 and stime 15 (1-based, man 5 proc).
    let after = &stat[stat.rfind(')').ok_or_else(|| bad("stat"))? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| -> io::Result<u64> {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .ok_or_else(|| bad("stat"))
    };
    Ok((ticks(11)? + ticks(12)?) as f64 / CLK_TCK)
}

/// A `kB` field (`VmRSS`, `VmHWM`, ...) of `/proc/PID/status`, in bytes.
pub fn parse_status_kb(status: &str, field: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        let rest = line.strip_prefix(field)?.strip_prefix(':')?;
        let kb: u64 = rest.split_whitespace().next()?.parse().ok()?;
        Some(kb * 1024)
    })
}

/// The soft limit on open files from the text of `/proc/PID/limits`; `None` if unlimited.
pub fn parse_open_files_limit(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The inodes of the sockets listening on `port`, from the text of `/proc/net/tcp` or
/// `/proc/net/tcp6` (state `0A` is LISTEN).
pub fn parse_listening_inodes(net_tcp: &str, port: u16) -> Vec<u64> {
    net_tcp
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let local = f.get(1)?;
            let local_port = u16::from_str_radix(local.rsplit(':').next()?, 16).ok()?;
            (local_port == port && *f.get(3)? == "0A").then(|| f.get(9)?.parse().ok())?
        })
        .collect()
}

/// The kernel's socket memory from the text of `/proc/net/sockstat`: TCP sockets in use and
/// the pages TCP buffers hold (`mem`), as `(inuse, mem_bytes)`.
pub fn parse_sockstat_tcp(sockstat: &str, page_size: u64) -> Option<(u64, u64)> {
    let line = sockstat.lines().find(|l| l.starts_with("TCP:"))?;
    let f: Vec<&str> = line.split_whitespace().collect();
    let value = |name: &str| -> Option<u64> {
        let i = f.iter().position(|x| *x == name)?;
        f.get(i + 1)?.parse().ok()
    };
    Some((value("inuse")?, value("mem")? * page_size))
}

/// CPU time and RSS of a process.
pub fn sample(pid: Pid) -> io::Result<Sample> {
    let dir = pid.dir();
    let cpu_secs = parse_stat_cpu_secs(&std::fs::read_to_string(dir.join("stat"))?)?;
    let status = std::fs::read_to_string(dir.join("status"))?;
    Ok(Sample {
        cpu_secs,
        rss_bytes: parse_status_kb(&status, "VmRSS").unwrap_or(0),
    })
}

/// A process's resident set size, in bytes.
pub fn rss_bytes(pid: Pid) -> io::Result<u64> {
    let status = std::fs::read_to_string(pid.dir().join("status"))?;
    parse_status_kb(&status, "VmRSS").ok_or_else(|| bad("status has no VmRSS"))
}

/// A process's peak resident set size (`VmHWM`), in bytes.
pub fn peak_rss_bytes(pid: Pid) -> io::Result<u64> {
    let status = std::fs::read_to_string(pid.dir().join("status"))?;
    parse_status_kb(&status, "VmHWM").ok_or_else(|| bad("status has no VmHWM"))
}

/// A process's command name (`/proc/PID/comm`).
pub fn process_name(pid: Pid) -> io::Result<String> {
    Ok(std::fs::read_to_string(pid.dir().join("comm"))?
        .trim()
        .to_owned())
}

/// A process's soft limit on open files; `None` when unlimited or unreadable.
pub fn open_files_limit(pid: Pid) -> Option<u64> {
    parse_open_files_limit(&std::fs::read_to_string(pid.dir().join("limits")).ok()?)
}

/// The socket inodes a process holds open (`socket:[INODE]` links in `/proc/PID/fd`).
pub fn socket_inodes(pid: Pid) -> io::Result<Vec<u64>> {
    let mut inodes = Vec::new();
    for entry in std::fs::read_dir(pid.dir().join("fd"))? {
        // A descriptor may close between the listing and the read: skip it.
        let Ok(target) = std::fs::read_link(entry?.path()) else {
            continue;
        };
        let target = target.to_string_lossy();
        if let Some(inode) = target
            .strip_prefix("socket:[")
            .and_then(|s| s.strip_suffix(']'))
            .and_then(|s| s.parse().ok())
        {
            inodes.push(inode);
        }
    }
    Ok(inodes)
}

/// The inodes of this machine's sockets listening on TCP `port` (IPv4 or IPv6).
fn listening_inodes(port: u16) -> Vec<u64> {
    let mut listening = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        if let Ok(text) = std::fs::read_to_string(table) {
            listening.extend(parse_listening_inodes(&text, port));
        }
    }
    listening
}

/// Whether process `pid` holds a socket listening on TCP `port` (IPv4 or IPv6): the check
/// that a PID given to a measuring tool is really the server it measures.
pub fn is_listening_on(pid: Pid, port: u16) -> io::Result<bool> {
    let listening = listening_inodes(port);
    let held = socket_inodes(pid)?;
    Ok(listening.iter().any(|inode| held.contains(inode)))
}

/// The processes holding a socket listening on TCP `port`, in PID order: who a wrong PID
/// should have been. Processes whose descriptors this user may not read are not seen.
pub fn listening_pids(port: u16) -> io::Result<Vec<u32>> {
    let listening = listening_inodes(port);
    let mut pids = Vec::new();
    if listening.is_empty() {
        return Ok(pids);
    }
    for entry in std::fs::read_dir("/proc")? {
        let Some(pid) = entry?.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        // A process may exit, or hide its descriptors from us: skip it.
        let Ok(held) = socket_inodes(Pid::Of(pid)) else {
            continue;
        };
        if held.iter().any(|inode| listening.contains(inode)) {
            pids.push(pid);
        }
    }
    pids.sort_unstable();
    Ok(pids)
}

/// TCP sockets in use on this machine and the memory their buffers hold in the kernel
/// (`/proc/net/sockstat`), which no process's RSS shows.
pub fn tcp_socket_memory() -> io::Result<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/net/sockstat")?;
    // The kernel counts `mem` in pages of 4 KiB on every architecture Linux runs us on here.
    parse_sockstat_tcp(&text, 4096).ok_or_else(|| bad("sockstat has no TCP line"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_is_read_after_a_command_name_with_spaces_and_parentheses() {
        let stat = "4242 (web (worker) 1) S 1 4242 4242 0 -1 4194560 700 0 0 0 250 50 0 0 20 0 \
                    3 0 12345 1000000 500 18446744073709551615";
        assert_eq!(parse_stat_cpu_secs(stat).unwrap(), 3.0);
        assert!(parse_stat_cpu_secs("no parenthesis").is_err());
        assert!(parse_stat_cpu_secs("1 (x) S 1").is_err());
    }

    #[test]
    fn status_fields_are_read_in_bytes_and_only_by_their_exact_name() {
        let status = "Name:\troomcast\nVmHWM:\t   20480 kB\nVmRSS:\t   10240 kB\n";
        assert_eq!(parse_status_kb(status, "VmRSS"), Some(10 * 1024 * 1024));
        assert_eq!(parse_status_kb(status, "VmHWM"), Some(20 * 1024 * 1024));
        assert_eq!(parse_status_kb(status, "VmRS"), None);
        assert_eq!(parse_status_kb(status, "VmSwap"), None);
    }

    #[test]
    fn the_open_files_limit_is_the_soft_one() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max processes             95000                95000                processes\n\
                      Max open files            1024                 524288               files\n";
        assert_eq!(parse_open_files_limit(limits), Some(1024));
        let unlimited =
            "Max open files            unlimited            unlimited            files\n";
        assert_eq!(parse_open_files_limit(unlimited), None);
    }

    #[test]
    fn only_listening_sockets_on_the_port_are_found() {
        let tcp = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 111 1 0 100 0 0 10 0\n\
   1: 0100007F:1F90 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 222 1 0 20 4 30 10 -1\n\
   2: 0100007F:1F91 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 333 1 0 100 0 0 10 0\n";
        assert_eq!(parse_listening_inodes(tcp, 8080), vec![111]);
        assert_eq!(parse_listening_inodes(tcp, 8081), vec![333]);
        assert!(parse_listening_inodes(tcp, 9000).is_empty());
    }

    #[test]
    fn kernel_tcp_memory_is_counted_in_pages() {
        let sockstat =
            "sockets: used 300\nTCP: inuse 12 orphan 0 tw 3 alloc 20 mem 7\nUDP: inuse 1 mem 0\n";
        assert_eq!(parse_sockstat_tcp(sockstat, 4096), Some((12, 7 * 4096)));
        assert_eq!(parse_sockstat_tcp("UDP: inuse 1 mem 0\n", 4096), None);
    }

    #[test]
    fn a_listener_of_this_process_is_found_by_port_and_by_pid() {
        if cfg!(target_os = "linux") {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let port = listener.local_addr().unwrap().port();
            assert!(is_listening_on(Pid::Current, port).unwrap());
            assert!(is_listening_on(Pid::Of(std::process::id()), port).unwrap());
            assert!(listening_pids(port).unwrap().contains(&std::process::id()));
            // Once the listener is closed, an accepted connection still holds the port, in
            // this process, but it is not listening.
            let _client = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
            let _accepted = listener.accept().unwrap();
            drop(listener);
            assert!(!is_listening_on(Pid::Current, port).unwrap());
            assert!(!listening_pids(port).unwrap().contains(&std::process::id()));
        }
    }

    #[test]
    fn this_process_can_be_read() {
        if cfg!(target_os = "linux") {
            let s = sample(Pid::Current).unwrap();
            assert!(s.rss_bytes > 0);
            assert!(peak_rss_bytes(Pid::Current).unwrap() >= s.rss_bytes / 2);
            assert!(!process_name(Pid::Current).unwrap().is_empty());
        }
    }
}
