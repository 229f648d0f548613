import { Type, type Static } from '@sinclair/typebox';
import { ERROR_CODES } from './errors.js';
import { SANDBOX_REASONS } from './lifecycle.js';
import { NAME_PATTERN } from './ids.js';
import { DISK_MB_MAX, DISK_MB_MIN, LIMIT_CODES, ON_TIMEOUT, MAX_OPEN_FILES_MAX, MAX_PORTS, MAX_VOLUMES_PER_SANDBOX, PROCESS_SIGNALS, RUNTIME_NAMES, SANDBOX_STATUSES, VOLUME_MB_MAX, VOLUME_MB_MIN } from './types.js';

/**
 * The wire contract of API v1, once: request and response schemas from which the server validates and
 * serialises, the OpenAPI document is generated, and the SDK and the service take their types
 * (`Static<typeof X>`). Nothing here knows HTTP routes; src/api/schemas.ts adds what only routes need.
 */

const closed = { additionalProperties: false } as const;
const StringMap = (maxProps: number, maxLen: number, description?: string) =>
  Type.Record(Type.String({ maxLength: 256 }), Type.String({ maxLength: maxLen }), { maxProperties: maxProps, ...(description ? { description } : {}) });
const Runtime = Type.Union(RUNTIME_NAMES.map((r) => Type.Literal(r)));
const Encoding = Type.Union([Type.Literal('utf8'), Type.Literal('base64')]);
const Limit = Type.Union(LIMIT_CODES.map((c) => Type.Literal(c)));
const OnTimeoutSchema = Type.Union(ON_TIMEOUT.map((c) => Type.Literal(c)), { description: 'what the end of timeoutSec does: stop (default), delete, or pause (memory kept; resumed by the next exec)' });

export const ErrorBody = Type.Object(
  { error: Type.Object({ code: Type.Union(ERROR_CODES.map((c) => Type.Literal(c))), message: Type.String() }) }
);

const PolicyEntry = Type.String({ minLength: 1, maxLength: 253 });
const NetworkBody = Type.Object(
  {
    // `allow`: IPv4 CIDRs and domain names (`*.example.com` for subdomains); `deny`: CIDRs, and wins.
    egress: Type.Union([
      Type.Literal('none'),
      Type.Literal('all'),
      Type.Object(
        { allow: Type.Optional(Type.Array(PolicyEntry, { maxItems: 256 })), deny: Type.Optional(Type.Array(PolicyEntry, { maxItems: 256 })) },
        closed,
      ),
    ]),
  },
  closed,
);
const NetworkOut = Type.Object({
  egress: Type.Union([Type.Literal('none'), Type.Literal('all'), Type.Object({ allow: Type.Array(Type.String()), deny: Type.Array(Type.String()) })]),
});
const Ports = Type.Array(Type.Integer({ minimum: 1, maximum: 65535 }), { maxItems: MAX_PORTS, uniqueItems: true, description: 'sandbox TCP ports served through the API at /api/v1/sandboxes/:id/ports/:port/' });
const VolumeName = Type.String({ pattern: NAME_PATTERN, maxLength: 63 });
const VolumeMountBody = Type.Object(
  { name: VolumeName, mountPath: Type.String({ minLength: 1, maxLength: 1024 }), readOnly: Type.Optional(Type.Boolean()) },
  closed,
);
const VolumeMountOut = Type.Object({ name: Type.String(), mountPath: Type.String(), readOnly: Type.Boolean() });

export const SandboxSchema = Type.Object(
  {
    id: Type.String(),
    name: Type.String(),
    status: Type.Union(SANDBOX_STATUSES.map((st) => Type.Literal(st))),
    node: Type.String(),
    image: Type.String(),
    imageDigest: Type.Optional(Type.String()),
    runtime: Runtime,
    cpus: Type.Number(),
    memoryMb: Type.Integer(),
    pidsLimit: Type.Integer(),
    diskMb: Type.Integer(),
    maxOpenFiles: Type.Integer(),
    env: Type.Record(Type.String(), Type.String()),
    workdir: Type.String(),
    timeoutSec: Type.Integer(),
    user: Type.Optional(Type.String()),
    nodeSelector: Type.Optional(Type.Record(Type.String(), Type.String())),
    network: Type.Optional(NetworkOut),
    ports: Type.Optional(Type.Array(Type.Integer())),
    volumes: Type.Optional(Type.Array(VolumeMountOut)),
    volumeNode: Type.Optional(Type.String()),
    imageNode: Type.Optional(Type.String()),
    snapshot: Type.Optional(Type.String()),
    metadata: Type.Optional(Type.Record(Type.String(), Type.String())),
    onTimeout: Type.Optional(OnTimeoutSchema),
    autoResume: Type.Optional(Type.Boolean()),
    createdAt: Type.String(),
    startedAt: Type.Optional(Type.String()),
    stoppedAt: Type.Optional(Type.String()),
    pausedAt: Type.Optional(Type.String()),
    error: Type.Optional(Type.Object({ code: Type.Union(SANDBOX_REASONS.map((c) => Type.Literal(c))), message: Type.String() })),
  }
);

export const CreateSandboxBody = Type.Object(
  {
    name: Type.Optional(Type.String({ pattern: NAME_PATTERN, maxLength: 63 })),
    image: Type.Optional(Type.String({ minLength: 1, maxLength: 512 })),
    runtime: Type.Optional(Runtime),
    cpus: Type.Optional(Type.Number({ exclusiveMinimum: 0, maximum: 64 })),
    memoryMb: Type.Optional(Type.Integer({ minimum: 16, maximum: 262144 })),
    pidsLimit: Type.Optional(Type.Integer({ minimum: 8, maximum: 32768 })),
    diskMb: Type.Optional(Type.Integer({ minimum: DISK_MB_MIN, maximum: DISK_MB_MAX, description: 'size of the writable layer in MiB (default 2048); writes past it fail with ENOSPC / DISK_FULL' })),
    // Never above 20000: raising the hard limit past the host's needs CAP_SYS_RESOURCE, and a task
    // with more than that many descriptors is more likely an attack than a program.
    maxOpenFiles: Type.Optional(Type.Integer({ minimum: 64, maximum: MAX_OPEN_FILES_MAX, description: 'RLIMIT_NOFILE of every process in the sandbox (default 4096)' })),
    env: Type.Optional(StringMap(256, 32768)),
    workdir: Type.Optional(Type.String({ maxLength: 4096 })),
    timeoutSec: Type.Optional(Type.Integer({ minimum: 0, maximum: 30 * 86400, description: 'auto-stop after this many seconds of running; 0 = never' })),
    user: Type.Optional(Type.String({ pattern: '^[A-Za-z0-9_][A-Za-z0-9_.-]*(:[A-Za-z0-9_][A-Za-z0-9_.-]*)?$', maxLength: 128 })),
    nodeSelector: Type.Optional(StringMap(32, 256, 'place only on nodes carrying all these labels (prismd --label k=v)')),
    network: Type.Optional(NetworkBody),
    ports: Type.Optional(Ports),
    volumes: Type.Optional(Type.Array(VolumeMountBody, { maxItems: MAX_VOLUMES_PER_SANDBOX, description: 'volumes to mount; the sandbox runs on the node that holds them' })),
    metadata: Type.Optional(StringMap(64, 1024, 'labels of your own, returned with the sandbox and matched by GET /sandboxes?metadata=k=v')),
    onTimeout: Type.Optional(OnTimeoutSchema),
    autoResume: Type.Optional(Type.Boolean({ description: 'exec, files and terminals on a paused sandbox resume it first (default true); false: they fail with 412' })),
    snapshot: Type.Optional(Type.String({ minLength: 1, maxLength: 64, description: 'create from this snapshot (POST /sandboxes/:id/snapshots): its files, on the node that holds it' })),
  },
  closed,
);

/** `POST /sandboxes/:id/timeout`: the sandbox's timeout ends this many seconds from now (0: never). */
export const TimeoutBody = Type.Object({ timeoutSec: Type.Integer({ minimum: 0, maximum: 30 * 86400 }) }, closed);

/** `GET /sandboxes` filters: `metadata=k=v` (repeatable, all must match), `status=a,b`. */
export const ListSandboxesQuery = Type.Object(
  {
    metadata: Type.Optional(Type.Union([Type.String({ maxLength: 2048 }), Type.Array(Type.String({ maxLength: 2048 }), { maxItems: 64 })])),
    status: Type.Optional(Type.String({ maxLength: 256 })),
  },
  closed,
);

export const CreateVolumeBody = Type.Object(
  {
    name: VolumeName,
    sizeMb: Type.Integer({ minimum: VOLUME_MB_MIN, maximum: VOLUME_MB_MAX }),
    multiAttach: Type.Optional(Type.Boolean()),
    /** The node (id or name) to make it on; absent: the node that serves the request. */
    node: Type.Optional(Type.String({ minLength: 1, maxLength: 253 })),
  },
  closed,
);

export const VolumeSchema = Type.Object({
  name: Type.String(),
  sizeMb: Type.Integer(),
  node: Type.String(),
  multiAttach: Type.Boolean(),
  createdAt: Type.String(),
  attachments: Type.Array(
    Type.Object({ sandboxId: Type.String(), mountPath: Type.String(), readOnly: Type.Boolean(), runtime: Runtime }),
  ),
  needsCheck: Type.Optional(Type.Boolean()),
});

export const VolumeParams = Type.Object({ name: Type.String({ minLength: 1, maxLength: 256 }) });

export const PortParams = Type.Object({
  id: Type.String({ minLength: 1, maxLength: 256 }),
  port: Type.Integer({ minimum: 1, maximum: 65535 }),
  '*': Type.Optional(Type.String()),
});

export const ExecBody = Type.Object(
  {
    command: Type.Optional(Type.String({ minLength: 1, maxLength: 1 << 20 })),
    cmd: Type.Optional(Type.Array(Type.String({ maxLength: 1 << 16 }), { minItems: 1, maxItems: 4096 })),
    env: Type.Optional(StringMap(256, 32768)),
    cwd: Type.Optional(Type.String({ maxLength: 4096 })),
    timeoutSec: Type.Optional(Type.Number({ exclusiveMinimum: 0, maximum: 86400 })),
    stdin: Type.Optional(Type.String()),
    stdinEncoding: Type.Optional(Encoding),
    /** Start the command as a background process and answer at once (201 Process). */
    background: Type.Optional(Type.Boolean()),
    user: Type.Optional(Type.Literal('root', { description: "run as the sandbox's root instead of its user" })),
  },
  closed,
);

const ExecResultProps = {
  id: Type.String(),
  exitCode: Type.Integer(),
  signal: Type.Optional(Type.String()),
  timedOut: Type.Boolean(),
  oomKilled: Type.Boolean(),
  diskFull: Type.Boolean(),
  limitExceeded: Type.Optional(Limit),
  durationMs: Type.Number(),
  stdout: Type.String(),
  stderr: Type.String(),
  encoding: Encoding,
};

/** `truncated`: the reply holds only the first bytes of the output (stream with NDJSON for all of it). */
export const ExecResultSchema = Type.Object({ ...ExecResultProps, truncated: Type.Optional(Type.Boolean()) });

export const ExecRecordSchema = Type.Object(
  { ...ExecResultProps, sandboxId: Type.String(), cmd: Type.Array(Type.String()), startedAt: Type.String(), truncated: Type.Boolean() }
);

export const NodeSchema = Type.Object(
  {
    id: Type.String(),
    name: Type.String(),
    address: Type.String(),
    status: Type.Union([Type.Literal('alive'), Type.Literal('dead')]),
    labels: Type.Record(Type.String(), Type.String()),
    capacity: Type.Object({
      cpus: Type.Number(), memoryMb: Type.Integer(), maxSandboxes: Type.Integer(),
      cpuOvercommit: Type.Optional(Type.Number()), memoryOvercommit: Type.Optional(Type.Number()),
    }),
    reserved: Type.Object({ cpus: Type.Number(), memoryMb: Type.Integer(), sandboxes: Type.Integer() }),
    version: Type.String(),
    runtimes: Type.Array(Runtime),
    defaultRuntime: Runtime,
    runtimeInfo: Type.Array(
      Type.Object({
        name: Runtime,
        usable: Type.Boolean(),
        reason: Type.Optional(Type.String()),
        details: Type.Optional(Type.Record(Type.String(), Type.String())),
      }),
    ),
    sandboxes: Type.Integer(),
    resources: Type.Object({
      cpus: Type.Integer(),
      memoryBytes: Type.Number(),
      memoryUsedBytes: Type.Number(),
      diskBytes: Type.Number(),
      diskUsedBytes: Type.Number(),
      load1: Type.Number(),
      cpuPercent: Type.Number(),
    }),
    startedAt: Type.String(),
    heartbeatAt: Type.String(),
  }
);

export const ClusterInfoSchema = Type.Object({
  version: Type.String(),
  node: Type.String(),
  nodes: Type.Integer(),
  nodesAlive: Type.Integer(),
  nodesDead: Type.Integer(),
  leader: Type.String(),
  leaderName: Type.String(),
  uptimeSec: Type.Integer(),
  sandboxes: Type.Object({ total: Type.Integer(), byStatus: Type.Record(Type.String(), Type.Integer()) }),
});

export const HealthSchema = Type.Object({ status: Type.Literal('ok'), node: Type.String(), version: Type.String() });

export const IdParams = Type.Object({ id: Type.String({ minLength: 1, maxLength: 256 }) });


export const PlatformSchema = Type.Object(
  { os: Type.String({ maxLength: 64 }), architecture: Type.String({ maxLength: 64 }), variant: Type.Optional(Type.String({ maxLength: 64 })) },
  closed,
);

export const ImageSchema = Type.Object({
  refs: Type.Array(Type.String()),
  digest: Type.String(),
  size: Type.Integer(),
  createdAt: Type.String(),
  os: Type.String(),
  architecture: Type.String(),
  config: Type.Object({
    env: Type.Array(Type.String()),
    workingDir: Type.Optional(Type.String()),
    user: Type.Optional(Type.String()),
    entrypoint: Type.Optional(Type.Array(Type.String())),
    cmd: Type.Optional(Type.Array(Type.String())),
  }),
  layers: Type.Array(Type.Object({ digest: Type.String(), diffId: Type.String(), size: Type.Integer(), mediaType: Type.String() })),
});

export const PullBody = Type.Object({ ref: Type.String({ minLength: 1, maxLength: 512 }), platform: Type.Optional(PlatformSchema) }, closed);

export const GcSchema = Type.Object({ blobsRemoved: Type.Integer(), layersRemoved: Type.Integer(), bytesFreed: Type.Integer() });

/** A background process; the result fields appear once it exited. */
export const ProcessSchema = Type.Object({
  id: Type.String(),
  sandboxId: Type.String(),
  cmd: Type.Array(Type.String()),
  status: Type.Union([Type.Literal('running'), Type.Literal('exited')]),
  startedAt: Type.String(),
  endedAt: Type.Optional(Type.String()),
  stdinOpen: Type.Boolean(),
  stdoutBytes: Type.Integer(),
  stderrBytes: Type.Integer(),
  exitCode: Type.Optional(Type.Integer()),
  signal: Type.Optional(Type.String()),
  timedOut: Type.Optional(Type.Boolean()),
  oomKilled: Type.Optional(Type.Boolean()),
  diskFull: Type.Optional(Type.Boolean()),
  limitExceeded: Type.Optional(Limit),
  durationMs: Type.Optional(Type.Number()),
  error: Type.Optional(Type.Object({ code: Type.String(), message: Type.String() })),
});

export const ProcessParams = Type.Object({ id: Type.String({ minLength: 1, maxLength: 256 }), pid: Type.String({ minLength: 1, maxLength: 64 }) });

// Query strings arrive as text and the API does not coerce types: digits, checked here, parsed by the route.
const Offset = Type.String({ pattern: '^[0-9]{1,15}$' });
export const OutputQuery = Type.Object(
  { stdoutOffset: Type.Optional(Offset), stderrOffset: Type.Optional(Offset), follow: Type.Optional(Type.Union([Type.Literal('true'), Type.Literal('false'), Type.Literal('1'), Type.Literal('0')])) },
  closed,
);

/** `*Offset`: where the next read continues; `*Dropped`: bytes before that the buffer no longer held. */
export const ProcessOutputSchema = Type.Object({
  stdout: Type.String(),
  stderr: Type.String(),
  encoding: Encoding,
  stdoutOffset: Type.Integer(),
  stderrOffset: Type.Integer(),
  stdoutDropped: Type.Integer(),
  stderrDropped: Type.Integer(),
  process: ProcessSchema,
});

export const StdinBody = Type.Object(
  { data: Type.Optional(Type.String()), encoding: Type.Optional(Encoding), close: Type.Optional(Type.Boolean()) },
  closed,
);

export const SignalBody = Type.Object({ signal: Type.Union(PROCESS_SIGNALS.map((s) => Type.Literal(s))) }, closed);

export const WaitQuery = Type.Object({ timeoutSec: Type.Optional(Type.String({ pattern: '^[0-9]{1,4}(\\.[0-9]+)?$' })) }, closed);
/** Files (docs/api.md, "Files"): paths are absolute inside the sandbox; `user: root` runs the operation as root. */
const FilePath = Type.String({ minLength: 1, maxLength: 4096 });
const AsRoot = Type.Optional(Type.Literal('root', { description: "run as the sandbox's root instead of its user" }));
export const FileQuery = Type.Object({ path: FilePath, user: AsRoot }, closed);
export const FileWriteQuery = Type.Object(
  { path: FilePath, user: AsRoot, mode: Type.Optional(Type.String({ pattern: '^(0o?)?[0-7]{1,4}$', description: 'octal, e.g. 0644' })) },
  closed,
);
export const FileDeleteQuery = Type.Object({ path: FilePath, user: AsRoot, recursive: Type.Optional(Type.Union([Type.Literal('true'), Type.Literal('false')])) }, closed);
export const MkdirBody = Type.Object(
  { path: FilePath, mode: Type.Optional(Type.Integer({ minimum: 0, maximum: 0o7777 })), parents: Type.Optional(Type.Boolean()), user: AsRoot },
  closed,
);
export const MoveBody = Type.Object({ from: FilePath, to: FilePath, user: AsRoot }, closed);
export const FileEntrySchema = Type.Object({
  name: Type.String(),
  type: Type.Union([Type.Literal('file'), Type.Literal('dir'), Type.Literal('symlink'), Type.Literal('other')]),
  size: Type.Integer(),
  mode: Type.Integer({ description: 'permission bits (0o644 = 420)' }),
  mtime: Type.String(),
  linkTarget: Type.Optional(Type.String()),
});
export const FileListSchema = Type.Object({ path: Type.String(), entries: Type.Array(FileEntrySchema) });
export const FileWrittenSchema = Type.Object({ path: Type.String(), size: Type.Integer() });

/** One sample of a sandbox's usage (`GET /sandboxes/:id/metrics`), taken on the node that runs it. */
export const SandboxMetricSchema = Type.Object({
  /** When it was taken (RFC 3339). */
  timestamp: Type.String(),
  /** CPU used since the previous sample, in percent of the sandbox's `cpus` (0-100). */
  cpuUsedPct: Type.Number(),
  /** The sandbox's CPU limit (`cpus`, may be fractional). */
  cpuCount: Type.Number(),
  memUsed: Type.Integer({ description: 'bytes of memory charged to the sandbox, page cache included' }),
  memTotal: Type.Integer({ description: 'the memory limit in bytes' }),
  memCache: Type.Integer({ description: 'of memUsed, the page cache (reclaimable)' }),
  diskUsed: Type.Integer({ description: 'bytes used on the writable layer' }),
  diskTotal: Type.Integer({ description: 'size of the writable layer (diskMb) in bytes; 0 where the runtime cannot tell' }),
  pids: Type.Integer(),
  /** Only for a sandbox with a network (egress or ports): counters since its network link was made. */
  netRxBytes: Type.Optional(Type.Integer({ description: 'bytes the sandbox received over its network since its link was made (a counter)' })),
  netTxBytes: Type.Optional(Type.Integer({ description: 'bytes the sandbox sent over its network since its link was made (a counter)' })),
});
export const MetricsQuery = Type.Object(
  {
    start: Type.Optional(Type.String({ maxLength: 40, description: 'oldest sample: unix seconds or RFC 3339' })),
    end: Type.Optional(Type.String({ maxLength: 40, description: 'newest sample: unix seconds or RFC 3339' })),
  },
  closed,
);
export const MetricsSchema = Type.Object({
  /** Seconds between samples on the node that runs the sandbox. */
  intervalSec: Type.Number(),
  metrics: Type.Array(SandboxMetricSchema),
});

export const SnapshotSchema = Type.Object({
  id: Type.String(),
  name: Type.String(),
  sandboxId: Type.String(),
  sandboxName: Type.String(),
  node: Type.String(),
  runtime: Runtime,
  image: Type.String(),
  imageDigest: Type.String(),
  size: Type.Integer(),
  memory: Type.Boolean(),
  shape: Type.Optional(Type.Object({
    cpus: Type.Number(), memoryMb: Type.Integer(), diskMb: Type.Integer(), pidsLimit: Type.Integer(), maxOpenFiles: Type.Integer(),
    network: NetworkOut, ports: Type.Array(Type.Integer()),
  })),
  createdAt: Type.String(),
});
export const SnapshotBody = Type.Object({ name: Type.Optional(Type.String({ minLength: 1, maxLength: 128 })) }, closed);
export const ForkBody = Type.Object({ count: Type.Optional(Type.Integer({ minimum: 1, maximum: 16, description: 'how many copies (default 1)' })) }, closed);
export const ForkSchema = Type.Object({
  sandboxes: Type.Array(SandboxSchema),
  snapshot: SnapshotSchema,
  /** Whether the forks got the parent's running processes (memory) or only its files. */
  memory: Type.Boolean(),
});

/** Body of `POST /sandboxes` (the SDK's `CreateSandboxOptions`, the service's `CreateSandboxRequest`). */
export type CreateSandboxWire = Static<typeof CreateSandboxBody>;
/** A command's result as `POST /exec` answers it (output included). */
export type ExecResultWire = Static<typeof ExecResultSchema>;
/** One entry of `GET /sandboxes/:id/logs`. */
export type ExecRecordWire = Static<typeof ExecRecordSchema>;
/** One sample of `GET /sandboxes/:id/metrics`. */
export type SandboxMetricWire = Static<typeof SandboxMetricSchema>;

/**
 * Kinds of lifecycle event (`GET /events`): `created` when a sandbox record first appears (pending),
 * the new status for every status change after it, `deleted` when the record is gone; and
 * `node-dead`, a node's membership ending (its lease ran out, or it left), which is no sandbox's.
 */
export const LIFECYCLE_EVENT_TYPES = ['created', ...SANDBOX_STATUSES.filter((s) => s !== 'pending'), 'deleted', 'node-dead'] as const;
export const LifecycleEventSchema = Type.Object({
  type: Type.Union(LIFECYCLE_EVENT_TYPES.map((t) => Type.Literal(t))),
  /** The sandbox; absent on `node-dead`. */
  sandboxId: Type.Optional(Type.String()),
  /** The sandbox's name; absent on `node-dead` and on a `deleted` of a record this node never saw. */
  name: Type.Optional(Type.String()),
  node: Type.Optional(Type.String({ description: 'the node the sandbox is placed on ("" before placement); on node-dead, the node that died' })),
  /** On `node-dead`: that node's name, when its record is there. */
  nodeName: Type.Optional(Type.String()),
  runtime: Type.Optional(Runtime),
  /** Why it failed, stopped or was lost, when the record says. */
  error: Type.Optional(Type.Object({ code: Type.String(), message: Type.String() })),
  /** The store revision of the change: events of one sandbox come in this order. */
  revision: Type.Integer(),
  time: Type.String({ description: 'when this node saw the change (RFC 3339)' }),
});
/** One line of `GET /events` (NDJSON) or one `data:` of its server-sent events. */
export type LifecycleEventWire = Static<typeof LifecycleEventSchema>;
