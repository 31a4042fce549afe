import BlobStore
import Logging
import ServiceLifecycle

/// Every `interval`, removes what nobody will use from the blob store:
/// * upload temp files older than `gracePeriod` (a gateway that died mid-upload);
/// * blobs that no reference names (``BlobReferences``) and that were last written more than
///   `gracePeriod` ago: a crash between a release's commit and the unlink, an upload stored
///   but never registered, a version rendered but never committed.
///
/// Replicas may sweep at once: each blob is re-checked under its lock before it goes.
struct BlobJanitor: Service {
    let references: BlobReferences
    let interval: Duration
    let gracePeriod: Duration
    let logger: Logger

    func run() async throws {
        while !Task.isShuttingDownGracefully && !Task.isCancelled {
            await sweep()
            try? await cancelWhenGracefulShutdown { try await Task.sleep(for: interval) }
        }
    }

    /// One pass; failures are logged and retried on the next pass.
    func sweep() async {
        let age = Double(gracePeriod.components.seconds)
        let temporary = references.store.sweepTemporaryFiles(olderThan: age)
        if temporary > 0 {
            logger.info("removed abandoned upload files", metadata: ["blob.removed": "\(temporary)"])
        }
        do {
            try await references.sweepUnreferenced(olderThan: age)
        } catch {
            logger.warning("sweeping unreferenced blobs failed; will retry", metadata: ["error": "\(error)"])
        }
    }
}
