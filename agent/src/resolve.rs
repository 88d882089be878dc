//! Host names to addresses without NSS (a static glibc cannot load its modules): `/etc/hosts`
//! first, then a stub resolver over UDP to the `nameserver`s of `/etc/resolv.conf`, honouring
//! `search`/`domain`, `ndots`, `timeout` and `attempts`. Parsing is done by maintained crates
//! (`resolv-conf`, `simple-dns`); only the small query loop is ours. A full resolver (hickory)
//! cost over half a megabyte of the agent's 3 MB budget for features a client of one host does
//! not need (caching, DNSSEC, DoH, TCP fallback: an A/AAAA answer fits in UDP).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use simple_dns::rdata::RData;
use simple_dns::{CLASS, Name, Packet, PacketFlag, QCLASS, QTYPE, Question, RCODE, TYPE};
use tokio::net::UdpSocket;

/// Where the system's name configuration lives; tests point it elsewhere.
#[derive(Clone, Debug)]
pub struct System<'a> {
    pub hosts: &'a str,
    pub resolv_conf: &'a str,
}

pub const SYSTEM: System<'static> = System { hosts: "/etc/hosts", resolv_conf: "/etc/resolv.conf" };

/// The addresses of `host`, IPv4 first.
pub async fn lookup(host: &str, system: &System<'_>) -> anyhow::Result<Vec<IpAddr>> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![ip]);
    }
    let from_hosts = in_hosts(host, &read(system.hosts).unwrap_or_default());
    if !from_hosts.is_empty() {
        return Ok(from_hosts);
    }
    let conf = read(system.resolv_conf).context("read resolv.conf")?;
    let conf = resolv_conf::Config::parse(&conf).map_err(|e| anyhow!("parse resolv.conf: {e}"))?;
    let servers: Vec<SocketAddr> =
        conf.nameservers.iter().map(|ip| SocketAddr::new(IpAddr::from(ip), 53)).collect();
    if servers.is_empty() {
        bail!("no nameserver in resolv.conf and `{host}` is not in /etc/hosts");
    }
    let timeout = Duration::from_secs(u64::from(conf.timeout.clamp(1, 30)));
    let mut last = anyhow!("`{host}` not found");
    for name in candidates(host, &conf) {
        for qtype in [TYPE::A, TYPE::AAAA] {
            for _ in 0..conf.attempts.clamp(1, 5) {
                for server in &servers {
                    match query(*server, &name, qtype, timeout).await {
                        Ok(ips) if !ips.is_empty() => return Ok(ips),
                        Ok(_) => last = anyhow!("`{name}` has no {qtype:?} record"),
                        Err(e) => last = e,
                    }
                }
            }
        }
    }
    Err(last)
}

/// Names to try, as the libc resolver orders them.
fn candidates(host: &str, conf: &resolv_conf::Config) -> Vec<String> {
    if let Some(absolute) = host.strip_suffix('.') {
        return vec![absolute.to_owned()];
    }
    let searched: Vec<String> =
        conf.get_last_search_or_domain().map(|domain| format!("{host}.{domain}")).collect();
    let dots = u32::try_from(host.matches('.').count()).unwrap_or(u32::MAX);
    if dots >= conf.ndots {
        std::iter::once(host.to_owned()).chain(searched).collect()
    } else {
        searched.into_iter().chain(std::iter::once(host.to_owned())).collect()
    }
}

fn in_hosts(host: &str, hosts: &str) -> Vec<IpAddr> {
    let mut ips: Vec<IpAddr> = hosts
        .lines()
        .map(|l| l.split('#').next().unwrap_or_default())
        .filter_map(|l| {
            let mut fields = l.split_whitespace();
            let ip = fields.next()?.parse::<IpAddr>().ok()?;
            fields.any(|name| name.eq_ignore_ascii_case(host)).then_some(ip)
        })
        .collect();
    ips.sort_by_key(IpAddr::is_ipv6);
    ips
}

async fn query(
    server: SocketAddr,
    name: &str,
    qtype: TYPE,
    limit: Duration,
) -> anyhow::Result<Vec<IpAddr>> {
    let id = u16::try_from(std::process::id() & 0xffff).unwrap_or(0) ^ u16::from(qtype);
    let mut packet = Packet::new_query(id);
    packet.set_flags(PacketFlag::RECURSION_DESIRED);
    let qname = Name::new(name).map_err(|e| anyhow!("`{name}` is not a host name: {e}"))?;
    packet.questions.push(Question::new(
        qname,
        QTYPE::TYPE(qtype),
        QCLASS::CLASS(CLASS::IN),
        false,
    ));
    let bytes = packet.build_bytes_vec().map_err(|e| anyhow!("build a DNS query: {e}"))?;
    let bind: SocketAddr = if server.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }.parse()?;
    let socket = UdpSocket::bind(bind).await.context("open a UDP socket")?;
    socket.connect(server).await.with_context(|| format!("reach nameserver {server}"))?;
    socket.send(&bytes).await.with_context(|| format!("query nameserver {server}"))?;
    let mut buf = vec![0u8; 4096];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let n = tokio::time::timeout_at(deadline, socket.recv(&mut buf))
            .await
            .map_err(|_| anyhow!("no answer from nameserver {server} within {limit:?}"))?
            .with_context(|| format!("read from nameserver {server}"))?;
        // Anything that is not the answer to this query is ignored, as the libc resolver does.
        let Ok(reply) = Packet::parse(&buf[..n]) else { continue };
        if reply.id() != id {
            continue;
        }
        if reply.rcode() != RCODE::NoError {
            bail!("nameserver {server}: {:?} for `{name}`", reply.rcode());
        }
        return Ok(reply
            .answers
            .iter()
            .filter_map(|rr| match &rr.rdata {
                RData::A(a) => Some(IpAddr::V4(Ipv4Addr::from(a.address))),
                RData::AAAA(a) => Some(IpAddr::V6(Ipv6Addr::from(a.address))),
                _ => None,
            })
            .collect());
    }
}

fn read(path: impl AsRef<Path>) -> std::io::Result<String> {
    std::fs::read_to_string(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_file_first_ipv4_before_ipv6() {
        let hosts = "# c\n::1 sidecar\n10.0.0.5 Sidecar.example sidecar # here\n10.0.0.6 other\n";
        let ips = in_hosts("sidecar", hosts);
        assert_eq!(ips, ["10.0.0.5".parse::<IpAddr>().unwrap(), "::1".parse().unwrap()]);
        assert!(in_hosts("nope", hosts).is_empty());
    }

    #[test]
    fn search_order_follows_ndots() {
        let conf =
            resolv_conf::Config::parse("search a.example b.example\noptions ndots:1\n").unwrap();
        assert_eq!(candidates("salt", &conf), ["salt.a.example", "salt.b.example", "salt"]);
        assert_eq!(candidates("salt.x", &conf), ["salt.x", "salt.x.a.example", "salt.x.b.example"]);
        assert_eq!(candidates("salt.x.", &conf), ["salt.x"]);
    }

    /// A nameserver on loopback (a plain UDP socket answering with simple-dns).
    #[tokio::test]
    async fn asks_the_nameserver_of_resolv_conf() {
        let server = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = server.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buf = [0u8; 512];
            loop {
                let (n, peer) = server.recv_from(&mut buf).await.unwrap();
                let q = Packet::parse(&buf[..n]).unwrap();
                let mut reply = Packet::new_reply(q.id());
                let name = q.questions[0].qname.clone();
                if q.questions[0].qtype == QTYPE::TYPE(TYPE::A) && name.to_string() == "sidecar.lab"
                {
                    let a = RData::A(simple_dns::rdata::A {
                        address: u32::from(Ipv4Addr::new(10, 1, 2, 3)),
                    });
                    reply.answers.push(simple_dns::ResourceRecord::new(name, CLASS::IN, 60, a));
                }
                server.send_to(&reply.build_bytes_vec().unwrap(), peer).await.unwrap();
            }
        });
        let ips = query(addr, "sidecar.lab", TYPE::A, Duration::from_secs(2)).await.unwrap();
        assert_eq!(ips, ["10.1.2.3".parse::<IpAddr>().unwrap()]);
        assert!(
            query(addr, "other.lab", TYPE::A, Duration::from_secs(2)).await.unwrap().is_empty()
        );
    }
}
