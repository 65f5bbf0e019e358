//! One pass of a node after observing: plan → act → sign → status.

use std::time::Duration;

use kube::runtime::controller::Action as Requeue;
use kube::Resource;

use super::act::Acting;
use super::desired::Pass;
use super::observe::{
    certificate_at_ca, certname_conflict, observe, recorded_signature, vanish_confirmed,
};
use super::report::{report_adoption, report_conflict, report_lost_certificate, report_pause};
use super::sign::{confirm, police_waiting_csr, SigningOutcome};
use super::status::{write_status, CertView};
use crate::api::conditions as cond;
use crate::api::node::{Phase, ReplacePolicy};
use crate::ca::CertState;
use crate::certificate::standing::{standing, Recorded, Standing};
use crate::controller::error::ReconcileError;
use crate::plan::plan;
use crate::status::conditions::{is_true, reason_of};
use puppet_conductor_core::pause::transition;

pub(super) async fn converge(pass: Pass<'_>) -> Result<Requeue, ReconcileError> {
    let Pass {
        node,
        master,
        services,
        snapshot,
        ctx,
        id,
        deleting,
        ..
    } = pass;
    // Paused: everything below observes and reports as usual; no step writes (the finalizer
    // was not added either, `mod.rs`). Deletion is never held.
    let held = pass.held();
    let mut observed = observe(node, services, snapshot, id, deleting).await?;
    observed.master_deleting = master.meta().deletion_timestamp.is_some();
    observed.vanish_confirmed = vanish_confirmed(ctx, &observed, snapshot);
    observed.launch_unsettled = deleting
        && ctx
            .launch_attempts
            .unsettled(&id.key, ctx.settings.instance_visibility_grace);
    let first = plan(&observed);
    let certname = id.certname(node, first.incarnation);
    let conflict = certname_conflict(ctx, node, master, id, &certname).await?;
    let at_ca = certificate_at_ca(services, snapshot, &certname, first.phase).await?;
    let ca_holds_certificate = at_ca
        .as_ref()
        .and_then(Option::as_ref)
        .is_some_and(|c| c.state != CertState::Requested);
    let (mut recorded, claim) = recorded_signature(
        ctx,
        node,
        services,
        snapshot,
        id,
        first.incarnation,
        ca_holds_certificate,
        !held,
    )
    .await?;
    let mut standing = standing(recorded.as_ref(), at_ca.as_ref().map(Option::as_ref))
        .for_derived_certname(node.spec.certname.is_none());
    // A lost verdict fences and replaces: it is confirmed by the CA as it is now, not by a
    // listing that may predate a signature made since (autosign signs outside this
    // process; simulation seed 2886 read such a certificate as vanished).
    let at_ca = if standing.is_lost() && snapshot.certificates.is_some() {
        let now = services.ca.status(&certname).await?;
        standing = crate::certificate::standing::standing(recorded.as_ref(), Some(now.as_ref()))
            .for_derived_certname(node.spec.certname.is_none());
        Some(now)
    } else {
        at_ca
    };
    observed.certname_conflict = conflict.is_some();
    // A paused node takes no replacement slot: it would fence nothing with it, and the
    // master's other nodes may need it.
    observed.fence_current = !deleting
        && !held
        && standing.is_lost()
        && node.spec.replace_policy == ReplacePolicy::Replace
        && ctx.replacements.acquire(
            &id.master_key,
            &id.key,
            ctx.settings.max_replacements_per_master,
        );
    let the_plan = plan(&observed);
    if deleting || held || !standing.is_lost() {
        ctx.replacements.release(&id.master_key, &id.key);
    }
    if the_plan.incarnation != first.incarnation {
        // A new incarnation: nothing is recorded or at the CA for it yet.
        recorded = None;
        standing = Standing::NoRequest;
    }
    let acting = Acting {
        pass,
        written: Default::default(),
        conflict: conflict.clone(),
    };
    // Events on transitions only: a conflict or a lost certificate that lasts is in the
    // conditions, not in a new event every pass.
    let before = node.status.as_ref();
    let before_conditions = before.map(|s| s.conditions.as_slice()).unwrap_or_default();
    if let Some(other) = &conflict {
        if !is_true(before_conditions, cond::CERTNAME_CONFLICT) {
            report_conflict(ctx, node, &certname, other).await;
        }
    }
    report_pause(
        ctx,
        node,
        transition(before_conditions, pass.pause),
        pass.pause,
    )
    .await;
    let at_ca = at_ca
        .flatten()
        .filter(|_| the_plan.incarnation == first.incarnation);
    let view = |standing, recorded| CertView {
        standing,
        recorded,
        at_ca: at_ca.as_ref(),
        conflict: conflict.as_deref(),
    };
    let outcome = match acting.run(&the_plan).await {
        Ok(o) => o,
        Err(error) => {
            let cert = view(standing, recorded.as_ref());
            let written = write_status(&pass, &the_plan, None, Some(&error), &cert).await;
            return Err(ReconcileError::reported(error, written));
        }
    };
    if deleting && !the_plan.release {
        let cert = view(standing, recorded.as_ref());
        write_status(&pass, &the_plan, None, None, &cert).await?;
        return Err(ReconcileError::CleanupInProgress(
            "waiting for instances to shut down".into(),
        ));
    }
    if the_plan.release {
        ctx.launch_attempts.settled(&id.key);
        ctx.events
            .publish(
                &node.object_ref(&()),
                false,
                "Released",
                "Cleanup",
                "cleanup confirmed; finalizer released".into(),
            )
            .await;
        return Ok(Requeue::await_change());
    }
    report_adoption(ctx, node, &the_plan, &outcome).await;
    let launched_id = outcome.launched.as_ref().map(|i| i.id.clone());
    let mut signed = false;
    // Any CSR waiting for the current certname is policed, whatever was signed before:
    // after a clean, a new CSR is a replay to refuse and remove.
    let csr_waiting = at_ca
        .as_ref()
        .is_some_and(|c| c.state == CertState::Requested);
    // A held pass neither signs nor removes (`police_waiting_csr` says Idle).
    if let (Phase::AwaitingCsr, true, Some(instance_id)) =
        (the_plan.phase, csr_waiting, the_plan.instance_id.as_deref())
    {
        match police_waiting_csr(&acting, the_plan.incarnation, instance_id).await {
            Ok(SigningOutcome::Signed) => signed = true,
            Ok(_) => {}
            Err(error) => {
                let cert = view(standing, recorded.as_ref());
                let written =
                    write_status(&pass, &the_plan, launched_id, Some(&error), &cert).await;
                return Err(ReconcileError::reported(error, written));
            }
        }
    }
    // Confirming writes the signature record: a held pass reports the signature as not
    // confirmed yet, which is what it is.
    if let (Standing::Unconfirmed, Some(claim), false) = (standing, &claim, held) {
        // Signed by autosign, or by a pass that stopped before recording it: confirm the CA
        // signed the claimed key and record the certificate's serial and fingerprint.
        match confirm(&acting, claim).await? {
            Some(confirmed) => {
                recorded = Some(Recorded::from(&confirmed));
                standing = Standing::Signed;
            }
            None => standing = Standing::Replaced,
        }
    }
    let newly_lost = reason_of(before_conditions, cond::CERTIFICATE_SIGNED)
        != Some(standing.reason())
        || before.and_then(|s| s.phase) != Some(the_plan.phase);
    if standing.is_lost() && newly_lost {
        report_lost_certificate(ctx, node, &certname, standing, &the_plan, held).await;
    }
    let cert = view(standing, recorded.as_ref());
    let phase = write_status(&pass, &the_plan, launched_id, None, &cert).await?;
    if let Some(instance) = &outcome.launched {
        ctx.events
            .publish(
                &node.object_ref(&()),
                false,
                "Launched",
                "Launch",
                format!(
                    "launched {} for incarnation {} (certname {})",
                    instance.id,
                    the_plan.incarnation,
                    id.certname(node, the_plan.incarnation)
                ),
            )
            .await;
    }
    if signed {
        // The next pass must see the CA's new state, not this pass's listing.
        ctx.snapshots.invalidate(&id.master_key).await;
        return Ok(Requeue::requeue(Duration::from_secs(1)));
    }
    Ok(match phase {
        // Nothing here changes until the other node goes: look again at the resync.
        _ if conflict.is_some() => Requeue::requeue(ctx.settings.resync),
        // Nothing is done until the annotation goes, which wakes the node (its own through
        // its watch, its master's through the master's trigger): observe at the resync.
        _ if held => Requeue::requeue(ctx.settings.resync),
        Phase::Ready | Phase::Failed => Requeue::requeue(ctx.settings.resync),
        // Waiting for a CSR: the master's CA watch wakes this node when its entry changes.
        // Only what the watch cannot tell is looked at again at the signing interval: a CA
        // that could not be listed (per-certname reads) or a CSR this pass left waiting
        // (its removal paced, or autosign's to be decided again).
        Phase::AwaitingCsr if snapshot.certificates.is_none() || (csr_waiting && !signed) => {
            Requeue::requeue(super::poll_interval(master))
        }
        Phase::AwaitingCsr => Requeue::requeue(ctx.settings.resync),
        _ => Requeue::requeue(ctx.settings.converging),
    })
}
