/** The etcd cluster's membership, as managed members (`--cluster-init`, `--join`) see and change it. */

export interface EtcdMemberInfo {
  /** etcd's member id (a uint64, in decimal). */
  id: string;
  /** Empty until the member first started. */
  name: string;
  peerUrls: string[];
  clientUrls: string[];
  /** A learner replicates but does not vote; joining members start as one and are then promoted. */
  learner: boolean;
}

export interface ClusterMembers {
  list(): Promise<EtcdMemberInfo[]>;
  /** Adds a member that does not vote yet; resolves with it and the members after the add. */
  addLearner(peerUrl: string): Promise<{ member: EtcdMemberInfo; members: EtcdMemberInfo[] }>;
  /** FAILED_PRECONDITION while the learner has not caught up with the leader (try again). */
  promote(id: string): Promise<void>;
  remove(id: string): Promise<void>;
}
