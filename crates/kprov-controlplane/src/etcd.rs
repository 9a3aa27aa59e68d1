//! Stacked etcd's membership, decided without talking to etcd: the
//! members as etcd's JSON gateway (`/v3/cluster/member/*`) reports them,
//! what a master that joins must do (add itself as a learner, replace a
//! stale member of its own name, or refuse), the `--initial-cluster` its
//! static pod starts with, and whether removing a member keeps quorum.
//!
//! kprov-kube sends the requests; kprov-workflow calls these decisions.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

/// The port etcd's members talk to each other on.
pub const PEER_PORT: u16 = 2380;
/// The port etcd's clients use.
pub const CLIENT_PORT: u16 = 2379;
/// The annotation on an etcd static pod with its member's client URLs
/// (kubeadm's, read by kubeadm join too).
pub const CLIENT_URLS_ANNOTATION: &str = "kubeadm.kubernetes.io/etcd.advertise-client-urls";

/// The URL etcd's peers reach a member at, on its advertise address.
pub fn peer_url(address: std::net::IpAddr) -> String {
    format!("https://{}:{PEER_PORT}", url_host(address))
}

/// The URL clients reach a member at, on its advertise address.
pub fn client_url(address: std::net::IpAddr) -> String {
    format!("https://{}:{CLIENT_PORT}", url_host(address))
}

fn url_host(address: std::net::IpAddr) -> String {
    match address {
        std::net::IpAddr::V4(v4) => v4.to_string(),
        std::net::IpAddr::V6(v6) => format!("[{v6}]"),
    }
}

/// One member, as the gateway spells it (64-bit IDs are strings in
/// JSON; a member that has not started yet has no name and no client
/// URLs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// The member's ID.
    #[serde(rename = "ID", with = "id_string")]
    pub id: u64,
    /// Its name, once it has started.
    #[serde(default)]
    pub name: String,
    /// Where its peers reach it.
    #[serde(rename = "peerURLs", default)]
    pub peer_urls: Vec<String>,
    /// Where clients reach it, once it has started.
    #[serde(rename = "clientURLs", default)]
    pub client_urls: Vec<String>,
    /// A learner: receives the log, does not vote.
    #[serde(rename = "isLearner", default)]
    pub is_learner: bool,
}

impl Member {
    /// Whether the member has started (has announced its name).
    pub fn started(&self) -> bool {
        !self.name.is_empty()
    }

    /// `ID` in the hexadecimal etcdctl prints.
    pub fn hex_id(&self) -> String {
        format!("{:x}", self.id)
    }

    /// The member as people read it: name (or "unstarted"), ID, peer URL.
    pub fn describe(&self) -> String {
        let name = if self.started() {
            self.name.as_str()
        } else {
            "unstarted"
        };
        let role = if self.is_learner { ", learner" } else { "" };
        format!(
            "{name} ({}{role}, {})",
            self.hex_id(),
            self.peer_urls.join(",")
        )
    }
}

mod id_string {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(id: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&id.to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Either {
            Text(String),
            Number(u64),
        }
        match Either::deserialize(d)? {
            Either::Number(n) => Ok(n),
            Either::Text(t) => t.parse().map_err(serde::de::Error::custom),
        }
    }
}

/// The body of a member list, add, remove or promote answer.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct MembersResponse {
    /// The member added (member/add only).
    #[serde(default)]
    pub member: Option<Member>,
    /// Every member after the change.
    #[serde(default)]
    pub members: Vec<Member>,
}

/// The body of `/v3/cluster/member/add`.
#[derive(Debug, Clone, Serialize)]
pub struct AddRequest {
    /// The new member's peer URLs.
    #[serde(rename = "peerURLs")]
    pub peer_urls: Vec<String>,
    /// Add it as a learner.
    #[serde(rename = "isLearner")]
    pub is_learner: bool,
}

/// The body of `/v3/cluster/member/remove` and `/promote`.
#[derive(Debug, Clone, Serialize)]
pub struct IdRequest {
    /// The member.
    #[serde(rename = "ID", with = "id_string")]
    pub id: u64,
}

/// What a joining master does about etcd's membership.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JoinStep {
    /// It is a member already (a re-run): nothing to add; promote it
    /// when it is still a learner.
    Member(Member),
    /// Add it as a learner.
    Add,
    /// A member of its name or peer URL is left from an earlier life of
    /// this machine (it has no etcd data now): remove that one, then add.
    ReplaceStale(Member),
}

/// Why a master may not change etcd's membership now.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MembershipError {
    /// Another change is under way: a member has not started yet, or a
    /// learner is not promoted.
    #[error("etcd has a membership change under way ({member}); kprov changes one member at a time: wait until it has started and is promoted (or remove it), then retry")]
    ChangeUnderWay {
        /// The member that has not finished joining.
        member: String,
    },
    /// Another member holds this master's name with another peer URL, or
    /// its peer URL under another name.
    #[error("etcd member {member} holds this master's {what}; remove it (`kprov reset` on that machine) or pick another node name or address")]
    Conflict {
        /// The member.
        member: String,
        /// "name" or "peer URL".
        what: &'static str,
    },
    /// The cluster lacks a healthy quorum: no change can commit.
    #[error("etcd lacks quorum: {healthy} of its voting members ({voters}) answer, {needed} are needed; bring members back before adding or removing one")]
    NoQuorum {
        /// Healthy voters.
        healthy: usize,
        /// Every voter.
        voters: String,
        /// The quorum.
        needed: usize,
    },
    /// Removing the member would leave too few healthy voters.
    #[error("removing etcd member {member} would break quorum: of the {remaining} voting members left, only {healthy} are healthy ({healthy_names}; not answering: {unhealthy_names}), and {needed} are needed; bring the others back first, or pass --force")]
    BreaksQuorum {
        /// The member to remove.
        member: String,
        /// Voting members after the removal.
        remaining: usize,
        /// Healthy ones among them.
        healthy: usize,
        /// Their names.
        healthy_names: String,
        /// The names of the voters that did not answer.
        unhealthy_names: String,
        /// The quorum of the smaller cluster.
        needed: usize,
    },
}

/// What a master named `name`, reached by peers at `peer_url`, does to
/// join etcd's `members`; `has_data` says whether its etcd data
/// directory holds a member already.
pub fn join_step(
    members: &[Member],
    name: &str,
    peer_url: &str,
    has_data: bool,
) -> Result<JoinStep, MembershipError> {
    let by_url = members
        .iter()
        .find(|m| m.peer_urls.iter().any(|u| u == peer_url));
    let by_name = members.iter().find(|m| m.started() && m.name == name);
    if let Some(m) = by_name {
        if by_url.is_none_or(|u| u.id != m.id) {
            return Err(MembershipError::Conflict {
                member: m.describe(),
                what: "name",
            });
        }
    }
    if let Some(m) = by_url {
        if m.started() && m.name != name {
            return Err(MembershipError::Conflict {
                member: m.describe(),
                what: "peer URL",
            });
        }
        // Its own member: a re-run when etcd has data here; otherwise left
        // from an earlier life of this machine (re-imaged, or added and
        // then lost before etcd started).
        return Ok(if has_data {
            JoinStep::Member(m.clone())
        } else {
            JoinStep::ReplaceStale(m.clone())
        });
    }
    if let Some(pending) = members.iter().find(|m| !m.started() || m.is_learner) {
        return Err(MembershipError::ChangeUnderWay {
            member: pending.describe(),
        });
    }
    Ok(JoinStep::Add)
}

/// The `--initial-cluster` of a member that joins: every member that
/// has started, plus itself, as `name=peerURL` (sorted, comma-joined).
pub fn initial_cluster(members: &[Member], name: &str, peer_url: &str) -> String {
    let mut entries: BTreeSet<String> = members
        .iter()
        .filter(|m| m.started() && m.name != name)
        .flat_map(|m| m.peer_urls.iter().map(|u| format!("{}={u}", m.name)))
        .collect();
    entries.insert(format!("{name}={peer_url}"));
    entries.into_iter().collect::<Vec<_>>().join(",")
}

/// Whether the voting members have a healthy quorum, which any
/// membership change needs; `healthy` holds the IDs that answered.
pub fn check_quorum(members: &[Member], healthy: &BTreeSet<u64>) -> Result<(), MembershipError> {
    let voters: Vec<&Member> = members.iter().filter(|m| !m.is_learner).collect();
    let well: Vec<&&Member> = voters.iter().filter(|m| healthy.contains(&m.id)).collect();
    let needed = voters.len() / 2 + 1;
    if well.len() >= needed {
        return Ok(());
    }
    Err(MembershipError::NoQuorum {
        healthy: well.len(),
        voters: voters
            .iter()
            .map(|m| m.describe())
            .collect::<Vec<_>>()
            .join(", "),
        needed,
    })
}

/// This member's name and the client URLs of every member listed in an
/// etcd static pod's manifest (`--name`, `--initial-cluster`, with the
/// peer port turned into the client port): whom `kprov reset` asks to
/// remove it. None when the manifest names no member.
pub fn manifest_member(manifest_yaml: &str) -> Option<(String, Vec<String>)> {
    let name = manifest_flag(manifest_yaml, "--name=")?;
    let urls = manifest_initial_cluster(manifest_yaml)
        .unwrap_or_default()
        .split(',')
        .filter_map(|entry| entry.split_once('=').map(|(_, url)| url.to_string()))
        .map(|peer| match peer.strip_suffix(&format!(":{PEER_PORT}")) {
            Some(host) => format!("{host}:{CLIENT_PORT}"),
            None => peer,
        })
        .collect();
    Some((name, urls))
}

/// The `--initial-cluster` of an etcd static pod's manifest. etcd reads it
/// only on its first start: a member's join run again keeps it, rather
/// than restart etcd for a flag it ignores.
pub fn manifest_initial_cluster(manifest_yaml: &str) -> Option<String> {
    manifest_flag(manifest_yaml, "--initial-cluster=")
}

/// The value of `flag` (`--name=`) among a manifest's arguments.
fn manifest_flag(manifest_yaml: &str, flag: &str) -> Option<String> {
    manifest_yaml.lines().find_map(|line| {
        let arg = line.trim().trim_start_matches("- ").trim();
        arg.strip_prefix(flag)
            .map(|v| v.trim_matches('"').to_string())
    })
}

/// The member named `name` among `members`.
pub fn member_named<'a>(members: &'a [Member], name: &str) -> Option<&'a Member> {
    members.iter().find(|m| m.name == name)
}

/// Where to send the removal of `leaving`: the healthy members' client
/// URLs but its own. A member that applies its own removal stops before
/// it answers ("etcdserver: server stopped"), though the removal holds.
pub fn removal_endpoints(
    members: &[Member],
    leaving: &Member,
    healthy: &BTreeSet<u64>,
) -> Vec<String> {
    members
        .iter()
        .filter(|m| m.id != leaving.id && healthy.contains(&m.id))
        .flat_map(|m| m.client_urls.iter().cloned())
        .collect()
}

/// Whether removing `leaving` from `members` keeps a quorum of healthy
/// voters; `healthy` holds the IDs that answered a health check. A
/// learner never counts; removing the last member is the caller's call
/// (it takes the cluster with it).
pub fn check_removal(
    members: &[Member],
    leaving: &Member,
    healthy: &BTreeSet<u64>,
) -> Result<(), MembershipError> {
    if leaving.is_learner {
        return Ok(());
    }
    let voters: Vec<&Member> = members
        .iter()
        .filter(|m| !m.is_learner && m.id != leaving.id)
        .collect();
    if voters.is_empty() {
        return Ok(());
    }
    let (well, unwell): (Vec<&Member>, Vec<&Member>) =
        voters.iter().partition(|m| healthy.contains(&m.id));
    let needed = voters.len() / 2 + 1;
    if well.len() >= needed {
        return Ok(());
    }
    let names = |list: &[&Member]| {
        if list.is_empty() {
            "none".to_string()
        } else {
            let mut names: Vec<&str> = list.iter().map(|m| m.name.as_str()).collect();
            names.sort_unstable();
            names.join(", ")
        }
    };
    Err(MembershipError::BreaksQuorum {
        member: leaving.describe(),
        remaining: voters.len(),
        healthy: well.len(),
        healthy_names: names(&well),
        unhealthy_names: names(&unwell),
        needed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: u64, name: &str, ip: &str, learner: bool) -> Member {
        Member {
            id,
            name: name.into(),
            peer_urls: vec![format!("https://{ip}:2380")],
            client_urls: if name.is_empty() {
                vec![]
            } else {
                vec![format!("https://{ip}:2379")]
            },
            is_learner: learner,
        }
    }

    #[test]
    fn a_leaving_member_is_removed_through_the_other_healthy_members() {
        let members = [
            member(1, "m1", "10.0.0.1", false),
            member(2, "m2", "10.0.0.2", false),
            member(3, "m3", "10.0.0.3", false),
        ];
        let healthy: BTreeSet<u64> = [1, 3].into();
        assert_eq!(
            removal_endpoints(&members, &members[2], &healthy),
            ["https://10.0.0.1:2379"]
        );
        let all: BTreeSet<u64> = [1, 2, 3].into();
        assert_eq!(
            removal_endpoints(&members, &members[0], &all),
            ["https://10.0.0.2:2379", "https://10.0.0.3:2379"]
        );
    }

    #[test]
    fn the_gateways_json_parses_with_string_ids_and_missing_fields() {
        // As etcd 3.4's gateway answered member/add here.
        let body = r#"{"header":{"cluster_id":"324952591200643719"},"member":{"ID":"1430232513109576125","peerURLs":["http://127.0.0.1:23801"],"isLearner":true},"members":[{"ID":"1430232513109576125","peerURLs":["http://127.0.0.1:23801"],"isLearner":true},{"ID":"3319814642761637952","name":"a","peerURLs":["http://127.0.0.1:23800"],"clientURLs":["http://127.0.0.1:23790"]}]}"#;
        let r: MembersResponse = serde_json::from_str(body).unwrap();
        let added = r.member.unwrap();
        assert_eq!(added.id, 1430232513109576125);
        assert!(added.is_learner && !added.started());
        assert_eq!(r.members[1].name, "a");
        assert!(!r.members[1].is_learner);
        let request = serde_json::to_string(&IdRequest { id: added.id }).unwrap();
        assert_eq!(request, r#"{"ID":"1430232513109576125"}"#);
    }

    #[test]
    fn a_new_master_is_added_and_starts_with_every_started_member() {
        let members = [member(1, "m1", "10.0.0.1", false)];
        let url = peer_url("10.0.0.2".parse().unwrap());
        assert_eq!(join_step(&members, "m2", &url, false), Ok(JoinStep::Add));
        assert_eq!(
            initial_cluster(&members, "m2", &url),
            "m1=https://10.0.0.1:2380,m2=https://10.0.0.2:2380"
        );
    }

    #[test]
    fn a_rerun_finds_itself_and_a_reimaged_master_replaces_its_stale_member() {
        let members = [
            member(1, "m1", "10.0.0.1", false),
            member(2, "m2", "10.0.0.2", false),
        ];
        let url = peer_url("10.0.0.2".parse().unwrap());
        assert_eq!(
            join_step(&members, "m2", &url, true),
            Ok(JoinStep::Member(members[1].clone()))
        );
        assert_eq!(
            join_step(&members, "m2", &url, false),
            Ok(JoinStep::ReplaceStale(members[1].clone()))
        );
        // Added before, then the machine died before etcd started.
        let members = [
            member(1, "m1", "10.0.0.1", false),
            member(2, "", "10.0.0.2", true),
        ];
        assert_eq!(
            join_step(&members, "m2", &url, false),
            Ok(JoinStep::ReplaceStale(members[1].clone()))
        );
    }

    #[test]
    fn another_change_under_way_and_name_or_address_clashes_are_refused() {
        let members = [
            member(1, "m1", "10.0.0.1", false),
            member(3, "", "10.0.0.3", true),
        ];
        let url = peer_url("10.0.0.2".parse().unwrap());
        let e = join_step(&members, "m2", &url, false).unwrap_err();
        assert!(matches!(e, MembershipError::ChangeUnderWay { .. }), "{e}");
        assert!(e.to_string().contains("unstarted (3, learner"), "{e}");

        let members = [member(1, "m1", "10.0.0.1", false)];
        let e = join_step(&members, "m1", &url, false).unwrap_err();
        assert!(e.to_string().contains("holds this master's name"), "{e}");
        let e = join_step(
            &members,
            "m9",
            &peer_url("10.0.0.1".parse().unwrap()),
            false,
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("holds this master's peer URL"),
            "{e}"
        );
    }

    #[test]
    fn a_manifest_names_its_member_and_where_the_others_answer() {
        let spec = {
            let node = kprov_pki::ControlPlaneNode::new(
                "m2".parse().unwrap(),
                "10.0.0.2".parse().unwrap(),
                "v1.20.2".parse().unwrap(),
            );
            crate::spec::ClusterSpec::new(kprov_pki::PkiSpec::new(node))
        };
        let pod = crate::manifests::etcd_joining(
            &spec,
            "m1=https://10.0.0.1:2380,m2=https://10.0.0.2:2380",
        );
        let (name, urls) = manifest_member(&pod.to_yaml()).unwrap();
        assert_eq!(name, "m2");
        assert_eq!(urls, ["https://10.0.0.1:2379", "https://10.0.0.2:2379"]);
        assert_eq!(
            manifest_initial_cluster(&pod.to_yaml()).as_deref(),
            Some("m1=https://10.0.0.1:2380,m2=https://10.0.0.2:2380")
        );
        assert_eq!(manifest_member("kind: Pod\n"), None);
    }

    #[test]
    fn removal_keeps_quorum_or_is_refused_naming_the_healthy_members() {
        let members = [
            member(1, "m1", "10.0.0.1", false),
            member(2, "m2", "10.0.0.2", false),
            member(3, "m3", "10.0.0.3", false),
        ];
        let all: BTreeSet<u64> = [1, 2, 3].into();
        assert_eq!(check_removal(&members, &members[2], &all), Ok(()));
        // m1 is down: m2 alone of {m1, m2} is not a quorum of 2.
        let e = check_removal(&members, &members[2], &[2, 3].into()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "removing etcd member m3 (3, https://10.0.0.3:2380) would break quorum: of the 2 voting members left, only 1 are healthy (m2; not answering: m1), and 2 are needed; bring the others back first, or pass --force"
        );
        assert_eq!(check_quorum(&members, &[1, 3].into()), Ok(()));
        let e = check_quorum(&members, &[3].into()).unwrap_err();
        assert!(
            e.to_string().starts_with(
                "etcd lacks quorum: 1 of its voting members (m1 (1, https://10.0.0.1:2380), m2"
            ),
            "{e}"
        );
        // Two members, both up: one may leave.
        assert_eq!(check_removal(&members[..2], &members[1], &all), Ok(()));
        // The last member, and a learner, always may.
        assert_eq!(check_removal(&members[..1], &members[0], &all), Ok(()));
        let learner = member(4, "m4", "10.0.0.4", true);
        assert_eq!(check_removal(&members, &learner, &BTreeSet::new()), Ok(()));
    }
}
