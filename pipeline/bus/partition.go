package bus

import (
	"errors"
	"flag"
	"fmt"
	"hash/fnv"
	"os"
	"strconv"
)

// Partition is one replica's share of a campaign's homes: N labeler (or
// windower) replicas each take the homes whose partition is their index,
// through a durable consumer of their own filtered to those homes'
// subjects. A home is read by one consumer, so its batches arrive in order
// and a session never splits between replicas; JetStream keeps each
// consumer's place, so a replica that dies is replaced by one with the same
// index that picks up where it stopped.
//
// The zero Partition (or Count 1) is the whole campaign under the
// unpartitioned durable name, as the embedded mode runs it.
type Partition struct {
	Index, Count int

	// indexErr and countErr are why HOMEMOLE_PARTITION and
	// HOMEMOLE_PARTITIONS could not be read (RegisterFlags); Validate
	// reports them unless --partition and --partitions replaced them.
	indexErr, countErr error
}

// Validate rejects an index outside 0..Count-1, and a HOMEMOLE_PARTITION or
// HOMEMOLE_PARTITIONS that is not a number.
func (p Partition) Validate() error {
	if err := errors.Join(p.indexErr, p.countErr); err != nil {
		return err
	}
	if p.Count < 0 || p.Count > 1 && (p.Index < 0 || p.Index >= p.Count) || p.Count <= 1 && p.Index != 0 {
		return fmt.Errorf("partition %d of %d: want --partitions N >= 1 and 0 <= --partition I < N (env %s, %s)", p.Index, p.Count, EnvPartition, EnvPartitions)
	}
	return nil
}

// PartitionOf is the partition of a home among n: FNV-1a (32-bit) of the
// name modulo n, the hash of NATS subject mapping's partition(n, ...), so
// the assignment stays the same if the split moves into the server's
// subject mapping.
func PartitionOf(home string, n int) int {
	if n <= 1 {
		return 0
	}
	h := fnv.New32a()
	h.Write([]byte(home))
	return int(h.Sum32() % uint32(n))
}

// Apply narrows cc to the partition's homes: subject gives a home's
// subjects (e.g. hm.pkt.<campaign>.<home>.*). The durable name gets the
// partition (labeler-spring-p0of2): replicas of different partitions keep
// their own places in the stream. Without partitions cc is unchanged.
func (p Partition) Apply(cc ConsumerConfig, homes []string, subject func(home string) string) ConsumerConfig {
	if p.Count <= 1 {
		return cc
	}
	cc.Durable = fmt.Sprintf("%s-p%dof%d", cc.Durable, p.Index, p.Count)
	cc.Filter, cc.Filters = "", []string{}
	for _, h := range homes {
		if PartitionOf(h, p.Count) == p.Index {
			cc.Filters = append(cc.Filters, subject(h))
		}
	}
	return cc
}

// Env variables that give --partition and --partitions their defaults.
const (
	EnvPartition  = "HOMEMOLE_PARTITION"
	EnvPartitions = "HOMEMOLE_PARTITIONS"
)

// RegisterFlags adds --partition and --partitions to fs, defaulting to
// HOMEMOLE_PARTITION and HOMEMOLE_PARTITIONS (a Kubernetes StatefulSet
// gives the index from the pod's ordinal, the apps.kubernetes.io/pod-index
// label, as k8s/base/labeler.yaml does). Both are whole numbers: a value
// that is not (a pod's name such as labeler-1) is an error Validate
// reports naming the variable, never partition 0, which would give two
// replicas the same homes and leave another partition unread.
func (p *Partition) RegisterFlags(fs *flag.FlagSet) {
	p.Index, p.indexErr = envPartition(EnvPartition, 0,
		"want this replica's partition, a whole number 0 to N-1; on Kubernetes take the pod's ordinal from its apps.kubernetes.io/pod-index label (k8s/base/labeler.yaml), not its name")
	p.Count, p.countErr = envPartition(EnvPartitions, 1,
		"want how many partitions the homes are split into, a whole number >= 1 (the replicas of the StatefulSet)")
	fs.Var(envInt{&p.Index, &p.indexErr}, "partition", "this replica's partition of the homes, 0..N-1 (env "+EnvPartition+")")
	fs.Var(envInt{&p.Count, &p.countErr}, "partitions", "how many partitions the homes are split into, one replica each; 1 reads every home (env "+EnvPartitions+")")
}

// envPartition reads one of the partition variables: def when unset.
func envPartition(name string, def int, want string) (int, error) {
	v := os.Getenv(name)
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		return def, fmt.Errorf("%s=%q: %s", name, v, want)
	}
	return n, nil
}
