//! `ChatAdmin`: operators' calls about chat (push dead letters) and about
//! the node's data (backups), guarded by the cluster secret like the
//! internal service.

use missive_proto::v1 as pb;
use missive_proto::v1::chat_admin_server::ChatAdmin;
use missive_proto::v1::chat_command::Op;
use tonic::{Request, Response, Status};

use crate::auth::Caller;
use crate::chat::Chat;
use crate::push::{self, Notification, PushConfig};
use crate::query;

/// Dead letters one list returns at most.
pub const MAX_DEAD_LETTERS: u32 = 1000;

/// The admin service; cheap to clone.
#[derive(Clone, Debug)]
pub struct Admin {
    pub chat: Chat,
}

fn operator() -> Caller {
    Caller {
        user: "missive.admin".to_owned(),
        device: "operator".to_owned(),
    }
}

#[tonic::async_trait]
impl ChatAdmin for Admin {
    async fn list_dead_letters(
        &self,
        req: Request<pb::ListDeadLettersRequest>,
    ) -> Result<Response<pb::ListDeadLettersResponse>, Status> {
        let limit = match req.into_inner().limit {
            0 => MAX_DEAD_LETTERS,
            n => n.min(MAX_DEAD_LETTERS),
        } as usize;
        let letters = self
            .chat
            .read(move |chat| {
                let mut all = Vec::new();
                for s in chat.stores() {
                    all.extend(query::dead_letters(s, limit)?);
                }
                Ok(all)
            })
            .await?;
        let mut letters = letters;
        letters.sort_by_key(|l| (l.failed_ms, l.index));
        letters.truncate(limit);
        Ok(Response::new(pb::ListDeadLettersResponse { letters }))
    }

    async fn backup(
        &self,
        req: Request<pb::BackupRequest>,
    ) -> Result<Response<pb::BackupResponse>, Status> {
        let to = std::path::PathBuf::from(req.into_inner().to);
        if !to.is_absolute() {
            return Err(Status::invalid_argument(
                "the backup directory must be an absolute path on the node",
            ));
        }
        let manifest = self.chat.node().backup(&to).await.map_err(|e| match e {
            missive_raft::Error::Backup { .. } => Status::failed_precondition(e.to_string()),
            missive_raft::Error::Unavailable { .. } => Status::unavailable(e.to_string()),
            e => Status::internal(e.to_string()),
        })?;
        Ok(Response::new(pb::BackupResponse {
            manifest_json: manifest.to_json().to_string(),
            bytes_copied: manifest.bytes_copied,
            bytes_skipped: manifest.bytes_skipped,
        }))
    }

    async fn status(
        &self,
        _req: Request<pb::AdminStatusRequest>,
    ) -> Result<Response<pb::AdminStatusResponse>, Status> {
        Ok(Response::new(
            crate::metrics::admin_status(&self.chat).await?,
        ))
    }

    async fn redrive_dead_letters(
        &self,
        req: Request<pb::RedriveRequest>,
    ) -> Result<Response<pb::RedriveResponse>, Status> {
        let wanted = req.into_inner().letters;
        let all = self
            .chat
            .read(|chat| {
                let mut all = Vec::new();
                for s in chat.stores() {
                    all.extend(query::dead_letters(s, MAX_DEAD_LETTERS as usize)?);
                }
                Ok(all)
            })
            .await?;
        let chosen: Vec<pb::DeadLetter> = all
            .into_iter()
            .filter(|l| {
                wanted.is_empty()
                    || wanted
                        .iter()
                        .any(|w| w.index == l.index && w.user == l.user && w.device == l.device)
            })
            .collect();
        // One attempt each, now: an operator re-drives after fixing the
        // receiver, and sees at once what still fails.
        let once = PushConfig {
            max_attempts: 1,
            ..PushConfig::default()
        };
        let mut resp = pb::RedriveResponse::default();
        for letter in chosen {
            // The device's current target (it may have been fixed since).
            let (user, device) = (letter.user.clone(), letter.device.clone());
            let target = self
                .chat
                .read(move |chat| {
                    Ok(query::push_targets(&chat.store_of(&user), &user)?
                        .into_iter()
                        .find(|(d, _)| *d == device))
                })
                .await?;
            let mut n = Notification::from_dead_letter(
                &letter,
                target
                    .as_ref()
                    .map(|t| t.1.token.clone())
                    .unwrap_or_default(),
            );
            if let Some((_, t)) = target {
                n.url = t.url;
            }
            match push::deliver(&n, &once).await {
                Ok(()) => {
                    self.chat
                        .propose(
                            &letter.conversation_id,
                            &operator(),
                            Op::ResolveDeadLetter(pb::ResolveDeadLetter {
                                index: letter.index,
                                user: letter.user.clone(),
                                device: letter.device.clone(),
                            }),
                        )
                        .await?;
                    resp.delivered += 1;
                }
                Err(_) => resp.failed += 1,
            }
        }
        Ok(Response::new(resp))
    }
}
