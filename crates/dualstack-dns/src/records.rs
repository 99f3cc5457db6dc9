//! Name → answer, following the Kubernetes DNS-based service discovery specification
//! (kubernetes/dns `docs/specification.md`, schema 1.1.0: A and AAAA per family). Pure: a
//! query name and type against a [`ClusterView`], no sockets.
//!
//! | name (below `<zone>`) | records |
//! |---|---|
//! | `<svc>.<ns>.svc` | A/AAAA from `clusterIPs` per family; headless: ready endpoints' addresses; ExternalName: CNAME |
//! | `<hostname>.<svc>.<ns>.svc` | A/AAAA of that ready endpoint of a headless Service |
//! | `_<port>._<proto>.<svc>.<ns>.svc` | SRV per named port (headless: per ready endpoint), targets' A/AAAA as additionals |
//! | `<a-b-c-d>.<ns>.pod`, `<fc00--5>.<ns>.pod` | A / AAAA of the dashed address (no pod lookup: CoreDNS's `pods insecure`) |
//! | `dns-version` | TXT `1.1.0` |
//! | `*.in-addr.arpa`, `*.ip6.arpa` | PTR of ClusterIPs and headless endpoints; other addresses are not ours |
//!
//! A name that exists without records of the asked type is NODATA (NOERROR, empty answer, the
//! zone's SOA in authority); a name that does not exist is NXDOMAIN (with the SOA), and so is a
//! headless Service without ready endpoints (spec §2.4.1). Empty non-terminals (`svc.<zone>`,
//! `<ns>.svc.<zone>` of a namespace with Services, `pod.<zone>`, `<ns>.pod.<zone>`) are NODATA.

use std::net::IpAddr;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::rdata::{A, AAAA, CNAME, PTR, SOA, SRV, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};

use crate::view::{ClusterView, ServiceEntry, ServiceKind, dashed, undashed};

/// The schema version in `dns-version.<zone>` TXT (1.1.0 added AAAA and ip6.arpa PTR).
pub const SCHEMA_VERSION: &str = "1.1.0";
/// TTL of every record we answer (CoreDNS's kubernetes plugin default).
pub const TTL: u32 = 5;
/// SRV priority and weight (values are not prescribed; CoreDNS uses 0 and an even share).
const SRV_PRIORITY: u16 = 0;

/// What the server does with a query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// An authoritative answer from the cluster view.
    Answer(Answer),
    /// The name is outside the cluster's zones (and not a reverse name we own): forward it or
    /// refuse it.
    NotOurs,
}

/// An authoritative answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// NoError or NXDomain.
    pub code: ResponseCode,
    /// The answer section.
    pub answers: Vec<Record>,
    /// The authority section: the zone's SOA for NXDOMAIN and NODATA.
    pub authority: Vec<Record>,
    /// The additional section (SRV targets' addresses).
    pub additionals: Vec<Record>,
}

/// Answers queries for one cluster domain.
#[derive(Debug, Clone)]
pub struct Zone {
    domain: Name,
    in_addr: Name,
    ip6: Name,
    soa: Record,
}

impl Zone {
    /// A zone for `--cluster-domain` (e.g. `cluster.local`).
    pub fn new(cluster_domain: &str) -> Result<Zone, crate::Error> {
        let domain = fqdn(cluster_domain)?;
        let soa = Record::from_rdata(
            domain.clone(),
            TTL,
            RData::SOA(SOA::new(
                fqdn(&format!("ns.dns.{cluster_domain}"))?,
                fqdn(&format!("hostmaster.{cluster_domain}"))?,
                1,
                7200,
                1800,
                86400,
                TTL,
            )),
        );
        Ok(Zone {
            domain,
            in_addr: fqdn("in-addr.arpa")?,
            ip6: fqdn("ip6.arpa")?,
            soa,
        })
    }

    /// The cluster domain, as a fully qualified name.
    pub fn domain(&self) -> &Name {
        &self.domain
    }

    /// The answer to `name` `qtype` from `view`.
    pub fn answer(&self, view: &ClusterView, name: &Name, qtype: RecordType) -> Outcome {
        let lower = name.to_lowercase();
        if self.in_addr.zone_of(&lower) || self.ip6.zone_of(&lower) {
            return self.reverse(view, name, &lower, qtype);
        }
        if !self.domain.zone_of(&lower) {
            return Outcome::NotOurs;
        }
        let labels: Vec<String> = lower
            .iter()
            .take(usize::from(lower.num_labels() - self.domain.num_labels()))
            .map(|l| String::from_utf8_lossy(l).into_owned())
            .collect();
        let labels: Vec<&str> = labels.iter().map(String::as_str).collect();
        let found = match labels.as_slice() {
            [] => Found::Records(match qtype {
                RecordType::SOA => vec![self.soa.clone()],
                _ => vec![],
            }),
            ["dns-version"] => Found::Records(match qtype {
                RecordType::TXT | RecordType::ANY => vec![Record::from_rdata(
                    name.clone(),
                    TTL,
                    RData::TXT(TXT::new(vec![SCHEMA_VERSION.to_string()])),
                )],
                _ => vec![],
            }),
            ["svc"] | ["pod"] | [_, "pod"] => Found::Records(vec![]),
            [ns, "svc"] if view.namespaces.contains(*ns) => Found::Records(vec![]),
            [svc, ns, "svc"] => match view.services.get(&(ns.to_string(), svc.to_string())) {
                Some(s) => self.service(name, s, qtype),
                None => Found::NxDomain,
            },
            [host, svc, ns, "svc"] if !host.starts_with('_') => {
                match view.services.get(&(ns.to_string(), svc.to_string())) {
                    Some(s) if s.kind == ServiceKind::Headless => {
                        match s.endpoints.iter().find(|e| e.hostname == *host) {
                            Some(e) => Found::Records(address_records(name, &e.addresses, qtype)),
                            None => Found::NxDomain,
                        }
                    }
                    _ => Found::NxDomain,
                }
            }
            [proto, svc, ns, "svc"] => {
                match view.services.get(&(ns.to_string(), svc.to_string())) {
                    Some(s) if s.ports.iter().any(|p| format!("_{}", p.protocol) == *proto) => {
                        Found::Records(vec![])
                    }
                    _ => Found::NxDomain,
                }
            }
            [port, proto, svc, ns, "svc"] => {
                match view.services.get(&(ns.to_string(), svc.to_string())) {
                    Some(s) => self.srv(name, svc, ns, s, port, proto, qtype),
                    None => Found::NxDomain,
                }
            }
            [ip, _ns, "pod"] => match undashed(ip) {
                Some(addr) => Found::Records(address_records(name, &[addr], qtype)),
                None => Found::NxDomain,
            },
            _ => Found::NxDomain,
        };
        Outcome::Answer(self.finish(found))
    }

    fn service(&self, name: &Name, s: &ServiceEntry, qtype: RecordType) -> Found {
        match &s.kind {
            ServiceKind::ClusterIp(ips) => Found::Records(address_records(name, ips, qtype)),
            ServiceKind::Headless => {
                let addrs = s.endpoint_addresses();
                if addrs.is_empty() {
                    // Spec §2.4.1: no ready endpoints → NXDOMAIN.
                    Found::NxDomain
                } else {
                    Found::Records(address_records(name, &addrs, qtype))
                }
            }
            ServiceKind::ExternalName(target) => match fqdn(target) {
                Ok(t) => Found::Records(vec![Record::from_rdata(
                    name.clone(),
                    TTL,
                    RData::CNAME(CNAME(t)),
                )]),
                Err(_) => Found::NxDomain,
            },
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn srv(
        &self,
        name: &Name,
        svc: &str,
        ns: &str,
        s: &ServiceEntry,
        port: &str,
        proto: &str,
        qtype: RecordType,
    ) -> Found {
        let ports: Vec<_> = s
            .ports
            .iter()
            .filter(|p| format!("_{}", p.name) == port && format!("_{}", p.protocol) == proto)
            .collect();
        if ports.is_empty() {
            return Found::NxDomain;
        }
        let Ok(service_name) = fqdn(&format!("{svc}.{ns}.svc.{}", self.domain_text())) else {
            return Found::NxDomain;
        };
        // (target, its addresses)
        let targets: Vec<(Name, Vec<IpAddr>)> = match &s.kind {
            ServiceKind::ClusterIp(ips) => vec![(service_name, ips.clone())],
            ServiceKind::Headless => {
                let t: Vec<_> = s
                    .endpoints
                    .iter()
                    .filter_map(|e| {
                        let n = Name::from_ascii(&e.hostname).ok()?;
                        Some((n.append_domain(&service_name).ok()?, e.addresses.clone()))
                    })
                    .collect();
                if t.is_empty() {
                    return Found::NxDomain;
                }
                t
            }
            ServiceKind::ExternalName(_) => return Found::NxDomain,
        };
        if !matches!(qtype, RecordType::SRV | RecordType::ANY) {
            return Found::Records(vec![]);
        }
        let weight = u16::try_from(100 / targets.len().max(1))
            .unwrap_or(1)
            .max(1);
        let mut answers = Vec::new();
        let mut additionals = Vec::new();
        for p in &ports {
            for (target, _) in &targets {
                answers.push(Record::from_rdata(
                    name.clone(),
                    TTL,
                    RData::SRV(SRV::new(SRV_PRIORITY, weight, p.port, target.clone())),
                ));
            }
        }
        for (target, addrs) in &targets {
            additionals.extend(address_records(target, addrs, RecordType::ANY));
        }
        Found::WithAdditionals(answers, additionals)
    }

    fn reverse(&self, view: &ClusterView, name: &Name, lower: &Name, qtype: RecordType) -> Outcome {
        let Some(ip) = lower
            .parse_arpa_name()
            .ok()
            .filter(|net| net.prefix_len() == net.max_prefix_len())
            .map(|net| net.addr())
        else {
            return Outcome::NotOurs;
        };
        let Some(owners) = view.reverse.get(&ip) else {
            return Outcome::NotOurs;
        };
        let domain = self.domain_text();
        let answers = if matches!(qtype, RecordType::PTR | RecordType::ANY) {
            owners
                .iter()
                .filter_map(|(ns, svc, host)| {
                    let text = match host {
                        Some(h) => format!("{h}.{svc}.{ns}.svc.{domain}"),
                        None => format!("{svc}.{ns}.svc.{domain}"),
                    };
                    Some(Record::from_rdata(
                        name.clone(),
                        TTL,
                        RData::PTR(PTR(fqdn(&text).ok()?)),
                    ))
                })
                .collect()
        } else {
            vec![]
        };
        let mut a = self.finish(Found::Records(answers));
        if a.answers.is_empty() {
            // NODATA for a reverse name we own: no SOA of the cluster zone fits there.
            a.authority.clear();
        }
        Outcome::Answer(a)
    }

    fn finish(&self, found: Found) -> Answer {
        let (code, answers, additionals) = match found {
            Found::NxDomain => (ResponseCode::NXDomain, vec![], vec![]),
            Found::Records(r) => (ResponseCode::NoError, r, vec![]),
            Found::WithAdditionals(r, a) => (ResponseCode::NoError, r, a),
        };
        let authority = if answers.is_empty() {
            vec![self.soa.clone()]
        } else {
            vec![]
        };
        Answer {
            code,
            answers,
            authority,
            additionals,
        }
    }

    fn domain_text(&self) -> String {
        self.domain.to_ascii().trim_end_matches('.').to_string()
    }
}

enum Found {
    NxDomain,
    Records(Vec<Record>),
    WithAdditionals(Vec<Record>, Vec<Record>),
}

/// A records for the IPv4 addresses (qtype A), AAAA for the IPv6 ones (AAAA), both for ANY;
/// nothing for other types (NODATA).
fn address_records(name: &Name, addrs: &[IpAddr], qtype: RecordType) -> Vec<Record> {
    addrs
        .iter()
        .filter_map(|ip| {
            let data = match (ip, qtype) {
                (IpAddr::V4(v4), RecordType::A | RecordType::ANY) => RData::A(A(*v4)),
                (IpAddr::V6(v6), RecordType::AAAA | RecordType::ANY) => RData::AAAA(AAAA(*v6)),
                _ => return None,
            };
            Some(Record::from_rdata(name.clone(), TTL, data))
        })
        .collect()
}

fn fqdn(text: &str) -> Result<Name, crate::Error> {
    let mut n = Name::from_ascii(text).map_err(|e| crate::Error::Name {
        name: text.to_string(),
        source: e,
    })?;
    n.set_fqdn(true);
    Ok(n.to_lowercase())
}

/// The pod record name of an address (`10-244-1-5.<ns>.pod.<zone>`), for tools and tests.
pub fn pod_name(ip: IpAddr, namespace: &str, cluster_domain: &str) -> String {
    format!("{}.{namespace}.pod.{cluster_domain}", dashed(ip))
}
