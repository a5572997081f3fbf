//! `synod lock <name> [-- command ...]`: etcdctl's `lock` over the server-side
//! Lock API (v3lockpb). Waits until the lock is free, then either prints the
//! lock's key and holds it until interrupted (Ctrl-C), or runs the command
//! with the lock held and releases it when the command ends.
//!
//! The command gets `ETCD_LOCK_KEY` (the lock's key) and `ETCD_LOCK_REV`
//! (its fencing token: the key's create revision, which grows with every new
//! holder); a holder must pass the token to whatever it protects so that a
//! stale holder — one whose lease expired while it was paused — is refused.
//!
//! The lock is held through a session lease (`--ttl`, kept alive in the
//! background, revoked on exit); if this process dies the lease expires and
//! the lock is released after at most `--ttl` seconds.
//!
//! On a PBFT cluster (a PBFT client key found, as `synod kv` finds it) the
//! lock is taken client-side with etcd's recipe, every step through f+1
//! matching replies ([`crate::pbft_client`]): a lease granted and kept
//! alive at the agreed clock, the key `<name>/<lease hex>` put with it (its
//! create revision, the put's revision, is the fencing token), then a poll
//! every [`PBFT_POLL`] until no key under `<name>/` with a smaller create
//! revision is left; the lease is revoked at the end (deleting the key).
//! One client key is one session: concurrent lockers need their own keys.
//!
//! Exit codes: 0 success, 1 the cluster answered with an error or could not
//! be reached, 2 bad usage; with a command, the command's own exit code.

use crate::client::{self, ClientOpts, Failure, emit, text, within};
use crate::pbft_client::{self, LeaseKeeper, PbftClient};
use crate::session::Session;
use clap::Args;
use std::process::ExitCode;
use std::time::Duration;
use synod_etcdpb::etcdserverpb as pb;
use synod_etcdpb::etcdserverpb::RangeRequest;
use synod_etcdpb::etcdserverpb::kv_client::KvClient;
use synod_etcdpb::v3lockpb::lock_client::LockClient;
use synod_etcdpb::v3lockpb::{LockRequest, UnlockRequest};

/// Arguments of `synod lock`.
#[derive(Args, Debug)]
pub struct LockArgs {
    #[command(flatten)]
    client: ClientOpts,
    /// The lock's name (a key prefix: holders' keys are `<name>/<lease>`).
    name: String,
    /// Time to live of the session lease, in seconds.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(i64).range(1..))]
    ttl: i64,
    /// A command to run while holding the lock (after `--`). It gets
    /// ETCD_LOCK_KEY (the lock key) and ETCD_LOCK_REV (the fencing token: pass
    /// it to whatever the lock protects); its exit code becomes ours.
    #[arg(last = true)]
    command: Vec<String>,
}

/// Runs `synod lock`.
pub fn run(args: LockArgs) -> ExitCode {
    client::run_command("lock", execute(args))
}

async fn execute(args: LockArgs) -> Result<(), Failure> {
    if args.name.is_empty() {
        return Err(Failure::Usage("the lock name must not be empty".into()));
    }
    let timeout = args.client.timeout();
    if let Some(pbft) = pbft_client::choose(&args.client).await? {
        return execute_pbft(pbft, &args).await;
    }
    let channel = client::connect(&args.client.endpoints, timeout).await?;
    let session = Session::start(channel.clone(), args.ttl, timeout).await?;
    let mut lost = session.lost.clone();
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    // Waiting for the lock is not bounded by --timeout-ms: it takes as long
    // as the holders ahead take. Ctrl-C gives up (and revokes the lease,
    // which withdraws this waiter).
    let mut locker = LockClient::new(channel.clone());
    let request = LockRequest { name: args.name.clone().into_bytes(), lease: session.lease_id };
    let locked = tokio::select! {
        r = locker.lock(request) => r,
        _ = &mut interrupted => {
            session.close().await;
            return Err(Failure::Cluster("interrupted while waiting for the lock".into()));
        }
        _ = lost.wait_for(|l| *l) => {
            session.close().await;
            return Err(Failure::Cluster("lost the session lease while waiting for the lock".into()));
        }
    };
    let key = match locked {
        Ok(r) => r.into_inner().key,
        Err(status) => {
            session.close().await;
            return Err(status.into());
        }
    };
    let held = hold(&args, &channel, &key, timeout, &mut lost).await;
    let unlocked =
        within(timeout, LockClient::new(channel).unlock(UnlockRequest { key: key.clone() })).await;
    session.close().await;
    held?;
    unlocked.map(|_| ())
}

/// How often a PBFT lock waiter asks whether the holders ahead are gone.
pub const PBFT_POLL: Duration = Duration::from_millis(200);

/// `synod lock` on PBFT (see the module doc).
async fn execute_pbft(mut pbft: PbftClient, args: &LockArgs) -> Result<(), Failure> {
    let mut keeper = LeaseKeeper::grant(&mut pbft, args.ttl).await?;
    let lease = keeper.lease;
    let held = pbft_lock_and_hold(&mut pbft, args, &mut keeper).await;
    // Revoking the lease deletes the key: the lock is released at once.
    let revoked = pbft.lease_revoke(lease).await;
    held?;
    revoked
}

/// etcd's recipe for locks and elections on PBFT, every step through f+1:
/// puts `key` = `value` with the keeper's lease (a new key: its create
/// revision, the put's revision, is returned), then polls every
/// [`PBFT_POLL`], renewing the lease, until no key under `prefix` has a
/// smaller create revision. Ctrl-C gives up.
pub(crate) async fn pbft_take_turn(
    pbft: &mut PbftClient,
    keeper: &mut LeaseKeeper,
    prefix: &[u8],
    key: &[u8],
    value: Vec<u8>,
) -> Result<i64, Failure> {
    let mut interrupted = pbft_client::armed_ctrl_c().await;
    let put =
        pb::PutRequest { key: key.to_vec(), value, lease: keeper.lease, ..Default::default() };
    let token = pbft
        .put(put)
        .await?
        .header
        .map(|h| h.revision)
        .ok_or_else(|| Failure::Cluster("error: a put answer without a revision".into()))?;
    loop {
        let ahead = pb::RangeRequest {
            key: prefix.to_vec(),
            range_end: client::prefix_end(prefix),
            max_create_revision: token - 1,
            limit: 1,
            keys_only: true,
            ..Default::default()
        };
        if pbft.range(ahead).await?.kvs.is_empty() {
            return Ok(token);
        }
        keeper.renew_if_due(pbft).await?;
        tokio::select! {
            _ = tokio::time::sleep(PBFT_POLL) => {}
            _ = &mut interrupted => {
                return Err(Failure::Cluster("interrupted while waiting for our turn".into()));
            }
        }
    }
}

async fn pbft_lock_and_hold(
    pbft: &mut PbftClient,
    args: &LockArgs,
    keeper: &mut LeaseKeeper,
) -> Result<(), Failure> {
    let mut prefix = args.name.clone().into_bytes();
    prefix.push(b'/');
    let mut key = prefix.clone();
    key.extend_from_slice(format!("{:x}", keeper.lease).as_bytes());
    let token = pbft_take_turn(pbft, keeper, &prefix, &key, Vec::new()).await?;
    let mut interrupted = pbft_client::armed_ctrl_c().await;
    let Some((program, program_args)) = args.command.split_first() else {
        emit(&format!("{}\n", text(&key)));
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(keeper.renew_at.into()) => keeper.renew_if_due(pbft).await?,
                _ = &mut interrupted => return Ok(()),
            }
        }
    };
    let mut child = tokio::process::Command::new(program)
        .args(program_args)
        .env("ETCD_LOCK_KEY", text(&key))
        .env("ETCD_LOCK_REV", token.to_string())
        .spawn()
        .map_err(|e| Failure::Usage(format!("cannot run `{program}`: {e}")))?;
    let mut lost = false;
    let status = loop {
        tokio::select! {
            s = child.wait() => break s,
            _ = tokio::time::sleep_until(keeper.renew_at.into()), if !lost => {
                if let Err(Failure::Cluster(why) | Failure::Usage(why)) =
                    keeper.renew_if_due(pbft).await
                {
                    eprintln!("synod lock: {why} while `{program}` ran");
                    lost = true;
                }
            }
        }
    };
    match status {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => Err(Failure::Exit(s.code().map_or(1, |c| c.clamp(1, 255) as u8))),
        Err(e) => Err(Failure::Cluster(format!("waiting for `{program}`: {e}"))),
    }
}

/// Holds the lock on `key`: runs the command, or prints the key and waits
/// for Ctrl-C (or the loss of the session).
async fn hold(
    args: &LockArgs,
    channel: &tonic::transport::Channel,
    key: &[u8],
    timeout: std::time::Duration,
    lost: &mut tokio::sync::watch::Receiver<bool>,
) -> Result<(), Failure> {
    let Some((program, program_args)) = args.command.split_first() else {
        emit(&format!("{}\n", text(key)));
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(()),
            _ = lost.wait_for(|l| *l) => {
                return Err(Failure::Cluster("lost the session lease: the lock is no longer held".into()));
            }
        }
    };
    let token = within(
        timeout,
        KvClient::new(channel.clone())
            .range(RangeRequest { key: key.to_vec(), ..Default::default() }),
    )
    .await?
    .kvs
    .first()
    .map(|kv| kv.create_revision)
    .ok_or_else(|| Failure::Cluster("the lock key vanished right after locking".into()))?;
    let mut child = tokio::process::Command::new(program)
        .args(program_args)
        .env("ETCD_LOCK_KEY", text(key))
        .env("ETCD_LOCK_REV", token.to_string())
        .spawn()
        .map_err(|e| Failure::Usage(format!("cannot run `{program}`: {e}")))?;
    let status = tokio::select! {
        s = child.wait() => s,
        _ = lost.wait_for(|l| *l) => {
            eprintln!("synod lock: lost the session lease while `{program}` ran: the lock is no longer held");
            child.wait().await
        }
    };
    match status {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => Err(Failure::Exit(s.code().map_or(1, |c| c.clamp(1, 255) as u8))),
        Err(e) => Err(Failure::Cluster(format!("waiting for `{program}`: {e}"))),
    }
}
