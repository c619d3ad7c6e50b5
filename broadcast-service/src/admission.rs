//! Admission control against hostile or runaway clients: how many WebSocket connections this
//! service holds (in total and per client address), how many clients one picture has, how many
//! pictures are open and how many raster bytes they take. A join is checked before its
//! upgrade, so a refusal is a plain HTTP answer (503 or 429, with `Retry-After`) and every other
//! client is untouched. What a connection holds is a [`Permit`], given back when it is dropped.
//!
//! Pictures and raster bytes count the pictures that have clients on this service. A new
//! picture's bytes are the size its joiner asked for; an existing picture's real size is only
//! known after its `Welcome` ([`Permit::confirm_size`]), which corrects the count and, if the
//! real picture no longer fits, refuses that client after all (PROTOCOL.md §12).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::Config;

/// Seconds a refused client is told to wait (`Retry-After`).
pub(crate) const RETRY_AFTER_SECONDS: u32 = 5;

/// Why a connection is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// `--max-connections`.
    Connections,
    /// `--max-connections-per-ip`.
    PerIp,
    /// `--max-clients-per-picture`.
    PictureClients,
    /// `--max-open-pictures`.
    OpenPictures,
    /// `--max-raster-bytes`.
    RasterBytes,
    /// `--max-open-pictures-per-ip`.
    OpenPicturesPerIp,
    /// `--max-raster-bytes-per-ip`.
    RasterBytesPerIp,
}

impl Refused {
    /// The `reason` label of `bs_connections_refused_total`.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Refused::Connections => "max_connections",
            Refused::PerIp => "max_connections_per_ip",
            Refused::PictureClients => "max_clients_per_picture",
            Refused::OpenPictures => "max_open_pictures",
            Refused::RasterBytes => "max_raster_bytes",
            Refused::OpenPicturesPerIp => "max_open_pictures_per_ip",
            Refused::RasterBytesPerIp => "max_raster_bytes_per_ip",
        }
    }

    pub(crate) fn status(self) -> StatusCode {
        match self {
            // Too much of this one client: it should slow down.
            Refused::PerIp | Refused::OpenPicturesPerIp | Refused::RasterBytesPerIp => {
                StatusCode::TOO_MANY_REQUESTS
            }
            // The service (or the picture) is full: try later, or another instance.
            _ => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    pub(crate) fn message(self) -> &'static str {
        match self {
            Refused::Connections => {
                "this service holds as many connections as it may (--max-connections)"
            }
            Refused::PerIp => "too many connections from your address (--max-connections-per-ip)",
            Refused::PictureClients => {
                "this picture has as many clients as it may (--max-clients-per-picture)"
            }
            Refused::OpenPictures => {
                "this service has as many pictures open as it may (--max-open-pictures)"
            }
            Refused::RasterBytes => {
                "this service holds as many raster bytes as it may (--max-raster-bytes)"
            }
            Refused::OpenPicturesPerIp => {
                "your address has opened as many pictures as it may (--max-open-pictures-per-ip)"
            }
            Refused::RasterBytesPerIp => {
                "your address has opened as many raster bytes as it may (--max-raster-bytes-per-ip)"
            }
        }
    }

    fn count(self) {
        metrics::counter!("bs_connections_refused_total", "reason" => self.label()).increment(1);
    }
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        let mut response = (self.status(), format!("{}\n", self.message())).into_response();
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECONDS));
        response
    }
}

#[derive(Default)]
struct Counts {
    connections: u32,
    per_ip: HashMap<IpAddr, u32>,
    pictures: HashMap<String, PictureUse>,
    raster_bytes: u64,
    /// What each address opened: pictures and their raster bytes.
    opened_by: HashMap<IpAddr, Opened>,
}

struct PictureUse {
    clients: u32,
    /// Counted in `raster_bytes`: the size asked for, then the real one once known.
    bytes: u64,
    /// The address of the client that opened it here, which it counts towards until it closes
    /// (whoever else joins meanwhile); `None` for an address nobody is charged for.
    opener: Option<IpAddr>,
}

/// Pictures one address opened, and their raster bytes.
#[derive(Default)]
struct Opened {
    pictures: u32,
    bytes: u64,
}

pub(crate) struct Admission {
    max_connections: u32,
    max_per_ip: u32,
    max_clients_per_picture: u32,
    max_open_pictures: u32,
    max_raster_bytes: u64,
    max_open_pictures_per_ip: u32,
    max_raster_bytes_per_ip: u64,
    trusted_proxies: Vec<IpAddr>,
    /// std Mutex: held for a few lines, never across `.await`.
    counts: Mutex<Counts>,
}

/// What one connection holds; dropping it gives it back.
pub(crate) struct Permit {
    admission: Arc<Admission>,
    ip: Option<IpAddr>,
    picture: Option<String>,
}

/// Raster bytes of a `width` x `height` RGBA picture.
pub(crate) fn raster_bytes(width: u32, height: u32) -> u64 {
    u64::from(width) * u64::from(height) * 4
}

impl Admission {
    pub(crate) fn new(config: &Config) -> Arc<Admission> {
        Arc::new(Admission {
            max_connections: config.max_connections,
            max_per_ip: config.max_connections_per_ip,
            max_clients_per_picture: config.max_clients_per_picture,
            max_open_pictures: config.max_open_pictures,
            max_raster_bytes: config.max_raster_bytes,
            max_open_pictures_per_ip: config.max_open_pictures_per_ip,
            max_raster_bytes_per_ip: config.max_raster_bytes_per_ip,
            trusted_proxies: config.trust_forwarded_for.clone(),
            counts: Mutex::new(Counts::default()),
        })
    }

    fn counts(&self) -> MutexGuard<'_, Counts> {
        // Every change under the lock is a few plain updates that cannot panic half-way.
        protocol::sync::lock(&self.counts)
    }

    /// The address a connection counts towards: the TCP peer, or, when the peer is a trusted
    /// proxy, the last address of `X-Forwarded-For` that is not itself a trusted proxy.
    pub(crate) fn client_ip(&self, peer: SocketAddr, headers: &HeaderMap) -> IpAddr {
        let peer = peer.ip().to_canonical();
        if !self.trusted_proxies.contains(&peer) {
            return peer;
        }
        let forwarded: Vec<IpAddr> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|a| a.trim().parse::<IpAddr>().ok())
            .map(|a| a.to_canonical())
            .collect();
        forwarded
            .into_iter()
            .rev()
            .find(|a| !self.trusted_proxies.contains(a))
            .unwrap_or(peer)
    }

    /// A relay link from another broadcast service: counts towards `--max-connections` only.
    pub(crate) fn admit_relay(self: &Arc<Self>) -> Result<Permit, Refused> {
        let mut counts = self.counts();
        if counts.connections >= self.max_connections {
            drop(counts);
            Refused::Connections.count();
            return Err(Refused::Connections);
        }
        counts.connections += 1;
        Ok(Permit {
            admission: self.clone(),
            ip: None,
            picture: None,
        })
    }

    /// A client from `ip` joining `picture`, which it asks to be `size` if it is new.
    pub(crate) fn admit_client(
        self: &Arc<Self>,
        ip: IpAddr,
        picture: &str,
        size: (u32, u32),
    ) -> Result<Permit, Refused> {
        let mut counts = self.counts();
        let verdict = self.check_client(&counts, ip, picture, size);
        if let Err(refused) = verdict {
            drop(counts);
            refused.count();
            return Err(refused);
        }
        counts.connections += 1;
        *counts.per_ip.entry(ip).or_default() += 1;
        let bytes = raster_bytes(size.0, size.1);
        let new = !counts.pictures.contains_key(picture);
        counts
            .pictures
            .entry(picture.to_string())
            .or_insert(PictureUse {
                clients: 0,
                bytes,
                opener: Some(ip),
            })
            .clients += 1;
        if new {
            counts.raster_bytes += bytes;
            let opened = counts.opened_by.entry(ip).or_default();
            opened.pictures += 1;
            opened.bytes += bytes;
        }
        Ok(Permit {
            admission: self.clone(),
            ip: Some(ip),
            picture: Some(picture.to_string()),
        })
    }

    fn check_client(
        &self,
        counts: &Counts,
        ip: IpAddr,
        picture: &str,
        size: (u32, u32),
    ) -> Result<(), Refused> {
        if counts.connections >= self.max_connections {
            return Err(Refused::Connections);
        }
        if counts.per_ip.get(&ip).copied().unwrap_or(0) >= self.max_per_ip {
            return Err(Refused::PerIp);
        }
        match counts.pictures.get(picture) {
            Some(open) if open.clients >= self.max_clients_per_picture => {
                Err(Refused::PictureClients)
            }
            Some(_) => Ok(()),
            None if counts.pictures.len() >= self.max_open_pictures as usize => {
                Err(Refused::OpenPictures)
            }
            None if counts.raster_bytes + raster_bytes(size.0, size.1) > self.max_raster_bytes => {
                Err(Refused::RasterBytes)
            }
            None => {
                let opened = counts.opened_by.get(&ip);
                let (pictures, bytes) = opened.map_or((0, 0), |o| (o.pictures, o.bytes));
                if pictures >= self.max_open_pictures_per_ip {
                    Err(Refused::OpenPicturesPerIp)
                } else if bytes + raster_bytes(size.0, size.1) > self.max_raster_bytes_per_ip {
                    Err(Refused::RasterBytesPerIp)
                } else {
                    Ok(())
                }
            }
        }
    }
}

impl Permit {
    /// Corrects the picture's raster bytes to its real size, known once its client is welcomed.
    /// `Err` when the correction takes the service over `--max-raster-bytes`: this client
    /// should then be refused (the picture is given back when its last client goes).
    pub(crate) fn confirm_size(&self, width: u32, height: u32) -> Result<(), Refused> {
        let Some(picture) = &self.picture else {
            return Ok(());
        };
        let admission = &self.admission;
        let mut counts = admission.counts();
        let real = raster_bytes(width, height);
        let Some(open) = counts.pictures.get_mut(picture) else {
            return Ok(());
        };
        let before = std::mem::replace(&mut open.bytes, real);
        if before == real {
            return Ok(());
        }
        let opener = open.opener;
        counts.raster_bytes = counts.raster_bytes.saturating_sub(before) + real;
        let mut opener_bytes = 0;
        if let Some(opened) = opener.and_then(|ip| counts.opened_by.get_mut(&ip)) {
            opened.bytes = opened.bytes.saturating_sub(before) + real;
            opener_bytes = opened.bytes;
        }
        if real > before {
            let refused = if counts.raster_bytes > admission.max_raster_bytes {
                Some(Refused::RasterBytes)
            } else if opener == self.ip && opener_bytes > admission.max_raster_bytes_per_ip {
                // Only the opener's own client is refused for the opener's budget.
                Some(Refused::RasterBytesPerIp)
            } else {
                None
            };
            if let Some(refused) = refused {
                drop(counts);
                refused.count();
                return Err(refused);
            }
        }
        Ok(())
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut counts = self.admission.counts();
        counts.connections = counts.connections.saturating_sub(1);
        if let Some(ip) = self.ip {
            if let Some(n) = counts.per_ip.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    counts.per_ip.remove(&ip);
                }
            }
        }
        if let Some(picture) = self.picture.take() {
            let gone = match counts.pictures.get_mut(&picture) {
                Some(open) => {
                    open.clients -= 1;
                    (open.clients == 0).then_some((open.bytes, open.opener))
                }
                None => None,
            };
            if let Some((bytes, opener)) = gone {
                counts.pictures.remove(&picture);
                counts.raster_bytes = counts.raster_bytes.saturating_sub(bytes);
                if let Some(ip) = opener {
                    if let Some(opened) = counts.opened_by.get_mut(&ip) {
                        opened.pictures = opened.pictures.saturating_sub(1);
                        opened.bytes = opened.bytes.saturating_sub(bytes);
                        if opened.pictures == 0 {
                            counts.opened_by.remove(&ip);
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use clap::Parser;

    fn admission(args: &[&str]) -> Arc<Admission> {
        let mut argv = vec!["broadcast-service"];
        argv.extend_from_slice(args);
        Admission::new(&Config::parse_from(argv))
    }

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2));

    #[test]
    fn permits_are_given_back() {
        let adm = admission(&["--max-connections", "2", "--max-connections-per-ip", "1"]);
        let a = adm.admit_client(A, "p", (10, 10)).unwrap();
        assert_eq!(
            adm.admit_client(A, "p", (10, 10)).err(),
            Some(Refused::PerIp)
        );
        let b = adm.admit_client(B, "q", (10, 10)).unwrap();
        assert_eq!(adm.admit_relay().err(), Some(Refused::Connections));
        drop(a);
        let _relay = adm.admit_relay().unwrap();
        drop(b);
        let counts = adm.counts();
        assert_eq!(counts.connections, 1);
        assert!(counts.per_ip.is_empty() && counts.pictures.is_empty());
        assert!(counts.opened_by.is_empty());
        assert_eq!(counts.raster_bytes, 0);
    }

    #[test]
    fn pictures_and_bytes_are_bounded() {
        let adm = admission(&[
            "--max-clients-per-picture",
            "2",
            "--max-open-pictures",
            "2",
            "--max-raster-bytes",
            "1000",
        ]);
        let p1 = adm.admit_client(A, "p", (10, 10)).unwrap(); // 400 bytes
        let _p2 = adm.admit_client(A, "p", (99, 99)).unwrap(); // same picture: no more bytes
        assert_eq!(
            adm.admit_client(B, "p", (10, 10)).err(),
            Some(Refused::PictureClients)
        );
        assert_eq!(
            adm.admit_client(B, "big", (20, 20)).err(),
            Some(Refused::RasterBytes)
        );
        let q = adm.admit_client(B, "q", (10, 10)).unwrap();
        assert_eq!(
            adm.admit_client(B, "r", (1, 1)).err(),
            Some(Refused::OpenPictures)
        );
        // "q" turns out to be bigger than asked: over the bytes, refused after all.
        assert_eq!(q.confirm_size(15, 15), Err(Refused::RasterBytes));
        drop(q);
        assert!(p1.confirm_size(10, 10).is_ok());
        assert_eq!(adm.counts().raster_bytes, 400);
    }

    #[test]
    fn each_address_opens_a_bounded_share() {
        let adm = admission(&[
            "--max-open-pictures-per-ip",
            "2",
            "--max-raster-bytes-per-ip",
            "1000",
        ]);
        let p = adm.admit_client(A, "p", (10, 10)).unwrap(); // A opens p: 400 bytes
        assert_eq!(
            adm.admit_client(A, "big", (15, 15)).err(), // 900 more
            Some(Refused::RasterBytesPerIp)
        );
        let q = adm.admit_client(A, "q", (10, 10)).unwrap(); // 800 bytes
        assert_eq!(
            adm.admit_client(A, "r", (1, 1)).err(),
            Some(Refused::OpenPicturesPerIp)
        );
        // Joining pictures that are open already costs A nothing; B has its own share.
        let _b_on_p = adm.admit_client(B, "p", (10, 10)).unwrap();
        let _b_on_r = adm.admit_client(B, "r", (15, 15)).unwrap();
        // q turns out bigger than asked: over A's share, A's client is refused after all.
        assert_eq!(q.confirm_size(13, 13), Err(Refused::RasterBytesPerIp)); // 400 + 676
        drop(q);
        // p stays A's while B is on it, even once A has left.
        drop(p);
        assert_eq!(adm.counts().opened_by[&A].pictures, 1);
        let _q = adm.admit_client(A, "q", (10, 10)).unwrap();
        assert_eq!(
            adm.admit_client(A, "s", (1, 1)).err(),
            Some(Refused::OpenPicturesPerIp)
        );
    }

    #[test]
    fn forwarded_for_is_believed_from_trusted_proxies_only() {
        let adm = admission(&["--trust-forwarded-for", "10.0.0.1"]);
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", "192.0.2.7, 10.0.0.1".parse().unwrap());
        let proxy: SocketAddr = "10.0.0.1:5000".parse().unwrap();
        let other: SocketAddr = "10.0.0.2:5000".parse().unwrap();
        assert_eq!(adm.client_ip(proxy, &headers).to_string(), "192.0.2.7");
        assert_eq!(adm.client_ip(other, &headers), B);
        assert_eq!(adm.client_ip(proxy, &HeaderMap::new()), A);
        let untrusting = admission(&[]);
        assert_eq!(untrusting.client_ip(proxy, &headers), A);
    }
}
