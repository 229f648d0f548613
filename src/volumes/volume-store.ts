/**
 * The VolumeStore seam: the node-local storage behind volumes. A volume is a file system of a fixed
 * size that outlives sandboxes; this seam makes, finds and removes it on this node. Which sandboxes
 * hold it, and on which node it lives, are Store records kept by the volume service; mounting it into
 * a task is the runtime driver's (TaskSpec.volumes carries the image path).
 *
 * Contract:
 * - `create` makes volume `name` of `sizeMb` MiB, empty, its root directory writable by every user
 *   (mode 1777, as /tmp: sandboxes run as different users). It appears whole or not at all: a failed
 *   or interrupted create leaves nothing a later `list` or `image` would see (`sweep` removes what a
 *   crash left). ALREADY_EXISTS when this node has a volume of that name; INVALID_ARGUMENT for a bad
 *   name or size.
 * - `image` returns the host path of the volume's ext4 image (what drivers mount or attach as a disk);
 *   NOT_FOUND when this node has no such volume.
 * - The size is a hard limit enforced by the file system: a write past it fails with ENOSPC, whichever
 *   runtime mounts it. Only written blocks use host disk (sparse).
 * - `remove` deletes the volume and its data; removing a volume that does not exist succeeds. The
 *   caller guarantees no task has it mounted (the volume service refuses while it is attached).
 * - `list` names every volume this node holds, so that the daemon can remove those without a record.
 * - `check` verifies the file system and repairs what it can, for data that a kernel other than the
 *   host's (a microVM's) wrote: the host's kernel must never mount a file system a guest may have
 *   crafted to hit a bug in its parser. FAILED_PRECONDITION when it cannot be repaired. Only while
 *   nothing has the volume mounted.
 * Errors: INVALID_ARGUMENT, ALREADY_EXISTS, NOT_FOUND, INTERNAL.
 */
export interface VolumeStore {
  create(name: string, sizeMb: number): Promise<void>;
  image(name: string): Promise<string>;
  remove(name: string): Promise<void>;
  list(): Promise<string[]>;
  check(name: string): Promise<void>;
  /** Removes leftovers of creates a crash interrupted. Call at start-up, before serving. */
  sweep(): Promise<void>;
}
