package bus

import (
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
}

// Validate rejects an index outside 0..Count-1.
func (p Partition) Validate() error {
	if p.Count < 0 || p.Count > 1 && (p.Index < 0 || p.Index >= p.Count) || p.Count <= 1 && p.Index != 0 {
		return fmt.Errorf("partition %d of %d: want --partitions N >= 1 and 0 <= --partition I < N", p.Index, p.Count)
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

// RegisterFlags adds --partition and --partitions to fs, defaulting to
// HOMEMOLE_PARTITION and HOMEMOLE_PARTITIONS (a Kubernetes StatefulSet can
// derive the index from the pod's ordinal).
func (p *Partition) RegisterFlags(fs *flag.FlagSet) {
	atoi := func(name string, def int) int {
		if n, err := strconv.Atoi(os.Getenv(name)); err == nil {
			return n
		}
		return def
	}
	fs.IntVar(&p.Index, "partition", atoi("HOMEMOLE_PARTITION", 0), "this replica's partition of the homes, 0..N-1 (env HOMEMOLE_PARTITION)")
	fs.IntVar(&p.Count, "partitions", atoi("HOMEMOLE_PARTITIONS", 1), "how many partitions the homes are split into, one replica each; 1 reads every home (env HOMEMOLE_PARTITIONS)")
}
