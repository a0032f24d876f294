// rust-ts-ipc for Node: the public API. One `Peer` interface over a child process's pipes
// (`spawnPeer`) and over the Rust core in this process (`inProcess`); failures are `PeerError`s.

export { PeerError, PeerErrorCode, isPeerError, type PeerErrorDetails } from './peer/errors.js';
export {
  DEFAULT_GRACE_MS,
  DEFAULT_MAX_IN_FLIGHT,
  DEFAULT_TIMEOUT_MS,
  STDERR_TAIL_BYTES,
  spawnPeer,
  type ChildExit,
  type ExitInfo,
  type ExitListener,
  type PipePeer,
  type RestartInfo,
  type RestartListener,
  type SpawnPeerOptions,
  type StderrOption,
} from './peer/pipe.js';
export { DEFAULT_RESTART, type RestartOptions, type RestartPolicy } from './peer/restart.js';
export { type RequestSyncOptions, type SyncPeerOptions, type SyncPipePeer, type SyncSpinStats } from './peer/sync.js';
export { inProcess, type InProcessOptions, type InProcessPeer } from './peer/in-process.js';
export type {
  CloseOptions,
  Encoding,
  ExitStatus,
  JsonValue,
  Message,
  MessageListener,
  Peer,
  PeerStats,
  RequestOptions,
  WireData,
} from './peer/types.js';
export {
  DEFAULT_MAX_CONCURRENT,
  Reply,
  reply,
  serveStdio,
  type Handler,
  type Handlers,
  type ServeOptions,
} from './serve.js';
