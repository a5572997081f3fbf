//! `synod elect <election> <proposal>` and `synod elect <election> --listen`:
//! etcdctl's `elect` over the server-side Election API (v3electionpb).
//!
//! Campaigning waits until this proposal leads, prints the leader key and the
//! proposal (`<election>/<lease>` then the value, as etcdctl does), and leads
//! until interrupted (Ctrl-C), then resigns. The leader key's revision is the
//! leader's fencing token (it grows with every new leader). `--listen`
//! prints the leader key and value every time the leadership changes hands
//! (or the leader proclaims a new value), until interrupted.
//!
//! Leadership is held through a session lease (`--ttl`, kept alive in the
//! background, revoked on exit); if this process dies, the lease expires and
//! the next candidate is elected after at most `--ttl` seconds.
//!
//! On a PBFT cluster (a PBFT client key found, as `synod kv` finds it) the
//! election runs client-side with etcd's recipe, every step through f+1
//! matching replies, as `synod lock` does: the key `<election>/<lease hex>`
//! put with the proposal, then polls until no key under `<election>/` is
//! older (smaller create revision); resigning revokes the lease. `--listen`
//! polls the oldest key under `<election>/` every 200 ms and prints it when
//! it (or its value) changes. One client key is one session: each
//! candidate and listener needs its own.
//!
//! Exit codes: 0 success, 1 the cluster answered with an error or could not
//! be reached (or leadership was lost), 2 bad usage.

use crate::client::{self, ClientOpts, Failure, emit, text, within};
use crate::pbft_client::{self, LeaseKeeper, PbftClient};
use crate::session::Session;
use clap::Args;
use std::process::ExitCode;
use synod_etcdpb::etcdserverpb as pb;
use synod_etcdpb::v3electionpb::election_client::ElectionClient;
use synod_etcdpb::v3electionpb::{CampaignRequest, LeaderRequest, ResignRequest};

/// Arguments of `synod elect`.
#[derive(Args, Debug)]
pub struct ElectArgs {
    #[command(flatten)]
    client: ClientOpts,
    /// The election's name.
    election: String,
    /// This candidate's proposal (the value published while it leads).
    #[arg(required_unless_present = "listen", conflicts_with = "listen")]
    proposal: Option<String>,
    /// Observe the election: print each leader's key and value as it changes.
    #[arg(short, long)]
    listen: bool,
    /// Time to live of the session lease, in seconds.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(i64).range(1..))]
    ttl: i64,
}

/// Runs `synod elect`.
pub fn run(args: ElectArgs) -> ExitCode {
    client::run_command("elect", execute(args))
}

async fn execute(args: ElectArgs) -> Result<(), Failure> {
    if args.election.is_empty() {
        return Err(Failure::Usage("the election name must not be empty".into()));
    }
    let timeout = args.client.timeout();
    if let Some(pbft) = pbft_client::choose(&args.client).await? {
        return execute_pbft(pbft, args).await;
    }
    let channel = client::connect(&args.client.endpoints, timeout).await?;
    let mut election = ElectionClient::new(channel.clone());
    let name = args.election.clone().into_bytes();
    let Some(proposal) = args.proposal else {
        return listen(election, name).await;
    };
    let session = Session::start(channel, args.ttl, timeout).await?;
    let mut lost = session.lost.clone();
    let campaign =
        CampaignRequest { name, lease: session.lease_id, value: proposal.clone().into_bytes() };
    let won = tokio::select! {
        r = election.campaign(campaign) => r,
        _ = tokio::signal::ctrl_c() => {
            session.close().await;
            return Err(Failure::Cluster("interrupted while campaigning".into()));
        }
        _ = lost.wait_for(|l| *l) => {
            session.close().await;
            return Err(Failure::Cluster("lost the session lease while campaigning".into()));
        }
    };
    let leader = match won.map(|r| r.into_inner().leader) {
        Ok(Some(leader)) => leader,
        Ok(None) => {
            session.close().await;
            return Err(Failure::Cluster("error: campaign answered without a leader key".into()));
        }
        Err(status) => {
            session.close().await;
            return Err(status.into());
        }
    };
    emit(&format!("{}\n{proposal}\n", text(&leader.key)));
    let held = tokio::select! {
        _ = tokio::signal::ctrl_c() => Ok(()),
        _ = lost.wait_for(|l| *l) => {
            Err(Failure::Cluster("lost the session lease: no longer the leader".into()))
        }
    };
    let resigned = within(timeout, election.resign(ResignRequest { leader: Some(leader) })).await;
    session.close().await;
    held?;
    resigned.map(|_| ())
}

/// `synod elect` on PBFT (see the module doc).
async fn execute_pbft(mut pbft: PbftClient, args: ElectArgs) -> Result<(), Failure> {
    let mut prefix = args.election.clone().into_bytes();
    prefix.push(b'/');
    let Some(proposal) = args.proposal else {
        return listen_pbft(&mut pbft, &prefix).await;
    };
    let mut keeper = LeaseKeeper::grant(&mut pbft, args.ttl).await?;
    let mut key = prefix.clone();
    key.extend_from_slice(format!("{:x}", keeper.lease).as_bytes());
    let value = proposal.clone().into_bytes();
    let led = async {
        crate::lock::pbft_take_turn(&mut pbft, &mut keeper, &prefix, &key, value).await?;
        let mut interrupted = pbft_client::armed_ctrl_c().await;
        emit(&format!("{}\n{proposal}\n", text(&key)));
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(keeper.renew_at.into()) => {
                    keeper.renew_if_due(&mut pbft).await.map_err(|_| {
                        Failure::Cluster("lost the session lease: no longer the leader".into())
                    })?;
                }
                _ = &mut interrupted => return Ok::<(), Failure>(()),
            }
        }
    }
    .await;
    // Resigning: revoking the lease deletes the key.
    let lease = keeper.lease;
    let resigned = pbft.lease_revoke(lease).await;
    led?;
    resigned
}

/// Prints the leader of the election under `prefix` (its oldest key, then
/// value) each time it changes, polling through f+1, until Ctrl-C.
async fn listen_pbft(pbft: &mut PbftClient, prefix: &[u8]) -> Result<(), Failure> {
    let mut shown: Option<(Vec<u8>, i64)> = None;
    let mut interrupted = pbft_client::armed_ctrl_c().await;
    loop {
        let all = pb::RangeRequest {
            key: prefix.to_vec(),
            range_end: client::prefix_end(prefix),
            ..Default::default()
        };
        let kvs = pbft.range(all).await?.kvs;
        if let Some(leader) = kvs.iter().min_by_key(|kv| kv.create_revision) {
            let now = (leader.key.clone(), leader.mod_revision);
            if shown.as_ref() != Some(&now) {
                emit(&format!("{}\n{}\n", text(&leader.key), text(&leader.value)));
                shown = Some(now);
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(crate::lock::PBFT_POLL) => {}
            _ = &mut interrupted => return Ok(()),
        }
    }
}

/// Prints every leader of election `name` (key, then value) until the stream
/// ends or Ctrl-C.
async fn listen(
    mut election: ElectionClient<tonic::transport::Channel>,
    name: Vec<u8>,
) -> Result<(), Failure> {
    let mut leaders = election.observe(LeaderRequest { name }).await?.into_inner();
    loop {
        let next = tokio::select! {
            m = leaders.message() => m,
            _ = tokio::signal::ctrl_c() => return Ok(()),
        };
        match next {
            Ok(Some(r)) => {
                if let Some(kv) = r.kv {
                    emit(&format!("{}\n{}\n", text(&kv.key), text(&kv.value)));
                }
            }
            Ok(None) => return Err(Failure::Cluster("error: observe stream closed".into())),
            Err(status) => return Err(status.into()),
        }
    }
}
