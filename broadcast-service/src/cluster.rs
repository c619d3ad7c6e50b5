//! The picture services this broadcast service talks to, and which one a picture goes to
//! (docs/scaling.md): rendezvous order over `--pps-url`, the first whose link is up. In
//! embedded mode there is one, in process.

use std::sync::Arc;

use link::PictureService;

/// Index of a picture service in [`Cluster::links`] (the order of `--pps-url`).
pub(crate) type LinkId = usize;

pub(crate) struct Link {
    /// As given in `--pps-url` (`embedded` in embedded mode).
    pub url: String,
    pub pps: Arc<dyn PictureService>,
}

pub(crate) struct Cluster {
    /// How other broadcast services reach this one (`--advertise-url`): relays connect to it,
    /// and picture services tell it to those who ask who sequences a picture.
    pub advertise_url: String,
    links: Vec<Link>,
    urls: Vec<String>,
}

impl Cluster {
    pub(crate) fn new(advertise_url: String, links: Vec<Link>) -> Cluster {
        let urls = links.iter().map(|l| l.url.clone()).collect();
        Cluster {
            advertise_url,
            links,
            urls,
        }
    }

    pub(crate) fn links(&self) -> &[Link] {
        &self.links
    }

    pub(crate) fn link(&self, id: LinkId) -> &Link {
        // Ids come from this cluster only; the modulo keeps a bad one from panicking.
        &self.links[id % self.links.len()]
    }

    /// The picture service to ask about `picture`: the first in its rendezvous order whose
    /// link is up, other than `avoid`; the first in that order if none is.
    pub(crate) fn route(&self, picture: &str, avoid: Option<LinkId>) -> LinkId {
        let order = protocol::placement::rendezvous(picture, &self.urls);
        order
            .iter()
            .copied()
            .filter(|&id| Some(id) != avoid)
            .find(|&id| self.links[id].pps.is_ready())
            .or_else(|| order.first().copied())
            .unwrap_or(0)
    }

    /// The picture service whose id (as it signs pictures) is `node`, if this service knows
    /// it (it learns each id when the link comes up).
    pub(crate) fn by_node(&self, node: u64) -> Option<LinkId> {
        self.links.iter().position(|l| l.pps.node() == Some(node))
    }
}
