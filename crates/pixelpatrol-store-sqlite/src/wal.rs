//! SQLite's write-ahead log: checkpointed beside the single writer, and
//! started over by it once long. PRAGMAs have no result SQLite can describe,
//! so these statements are not checked at compile time.

use std::time::Duration;

use sqlx::SqlitePool;

/// The WAL file is cut back to this size (bytes) after it has been emptied.
pub(super) const WAL_SIZE_LIMIT: &str = "67108864";
/// How often the checkpointer copies what the WAL has gathered.
const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(50);
/// WAL frames (4 KiB pages) after which the checkpointer makes the writer
/// start the WAL over.
const WAL_RESTART_FRAMES: i64 = 4096;
/// How long the writer's RESTART checkpoint waits for readers.
const RESTART_READER_WAIT: Duration = Duration::from_millis(50);
/// How long a connection waits for a lock before answering busy.
pub(super) const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// Copies the WAL back into the database file from its own connection.
///
/// SQLite's automatic checkpoint runs on the connection that commits, that is
/// on the single writer, which is the throughput bottleneck: checkpoints and
/// their fsyncs took an eighth of the database threads' time in the
/// throughput benchmark. Passive checkpoints beside it never block the
/// writer or the readers. But the writer only starts the WAL over when it
/// finds everything copied as it begins a transaction, which a busy writer
/// never does: the WAL grew by gigabytes. So once the WAL is long, the
/// writer itself runs a RESTART checkpoint, which copies the few frames the
/// passive ones left and waits for readers, and its next transaction starts
/// the WAL from the beginning.
pub(super) async fn checkpoint_wal(checkpointer: SqlitePool, writer: SqlitePool) {
    // The WAL length at the last RESTART: an idle WAL is restarted once.
    let mut restarted_at = None;
    while !writer.is_closed() {
        let passive = sqlx::query_as::<_, (i64, i64, i64)>("PRAGMA wal_checkpoint(PASSIVE)")
            .fetch_one(&checkpointer)
            .await;
        let result = match passive {
            Ok((_, frames, _)) if frames >= WAL_RESTART_FRAMES && restarted_at != Some(frames) => {
                restarted_at = Some(frames);
                restart_wal(&writer).await
            }
            Ok(_) => Ok(()),
            Err(error) => Err(error),
        };
        if let Err(error) = result {
            tracing::warn!(error = ?error, "checkpointing the SQLite WAL failed");
            tokio::time::sleep(CHECKPOINT_INTERVAL * 20).await;
        }
        tokio::time::sleep(CHECKPOINT_INTERVAL).await;
    }
    checkpointer.close().await;
}

/// A RESTART checkpoint on the writer's own connection, between its
/// transactions: from another connection, holding writers back would make a
/// writer transaction that began with a read fail as busy. It waits for
/// readers at most `RESTART_READER_WAIT` (a long API read must not stall
/// every write); if they are still there, the next try comes soon.
async fn restart_wal(writer: &SqlitePool) -> Result<(), sqlx::Error> {
    let mut connection = writer.acquire().await?;
    sqlx::query(&format!(
        "PRAGMA busy_timeout = {}",
        RESTART_READER_WAIT.as_millis()
    ))
    .execute(&mut *connection)
    .await?;
    let restart = sqlx::query("PRAGMA wal_checkpoint(RESTART)")
        .execute(&mut *connection)
        .await;
    sqlx::query(&format!(
        "PRAGMA busy_timeout = {}",
        SQLITE_BUSY_TIMEOUT.as_millis()
    ))
    .execute(&mut *connection)
    .await?;
    restart.map(|_| ())
}
