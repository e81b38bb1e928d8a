package bus

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
)

// HomeKV is a JetStream key-value bucket of one value per campaign, home
// and tap (key <campaign>.<home>.<tap>), kept on disk and replicated as
// the streams are: where a worker keeps a home's place, so that a
// replacement anywhere in the cluster finds it.
type HomeKV struct {
	KV     jetstream.KeyValue
	Bucket string
}

// OpenHomeKV declares the bucket (idempotently) and opens it.
func OpenHomeKV(ctx context.Context, js jetstream.JetStream, bucket, description string, replicas int) (*HomeKV, error) {
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket: bucket, Description: description, History: 1, Storage: jetstream.FileStorage, Replicas: max(1, replicas),
	})
	if err != nil {
		return nil, fmt.Errorf("declare the key-value bucket %s: %w (may this NATS user declare it? see k8s/natsauth)", bucket, err)
	}
	return &HomeKV{KV: kv, Bucket: bucket}, nil
}

// HomeKey is the key of a home's tap.
func HomeKey(campaign, home, tap string) string { return campaign + "." + home + "." + tap }

// Get reads a home's value; false when it has none.
func (k *HomeKV) Get(ctx context.Context, campaign, home, tap string) ([]byte, bool, error) {
	key := HomeKey(campaign, home, tap)
	e, err := k.KV.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("read %s/%s: %w", k.Bucket, key, err)
	}
	return e.Value(), true, nil
}

// Put writes a home's value.
func (k *HomeKV) Put(ctx context.Context, campaign, home, tap string, v []byte) error {
	key := HomeKey(campaign, home, tap)
	if _, err := k.KV.Put(ctx, key, v); err != nil {
		return fmt.Errorf("write %s/%s (%d bytes): %w", k.Bucket, key, len(v), err)
	}
	return nil
}

// Forget says how a home starts afresh: delete its key.
func (k *HomeKV) Forget(campaign, home, tap string) string {
	return fmt.Sprintf("`nats kv del %s %s`", k.Bucket, HomeKey(campaign, home, tap))
}
