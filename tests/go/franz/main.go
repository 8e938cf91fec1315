// A franz-go client against Sluice's Kafka port, driven by tests/tests/t76_kafka_clients.rs:
// kadm creates a 3-partition topic, two group members (the default cooperative-sticky
// balancer) join before anything is produced, an idempotent acks=all producer writes N keyed
// records with repeated header keys, the members consume until every record is seen, commit,
// and kadm reads the group's committed offsets and lag. Prints one JSON report.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

type rec struct {
	Partition int32      `json:"partition"`
	Offset    int64      `json:"offset"`
	Key       string     `json:"key"`
	Value     string     `json:"value"`
	Headers   [][]string `json:"headers"`
}

type report struct {
	Created   bool             `json:"created"`
	Acked     []rec            `json:"acked"`
	Consumed  [][]rec          `json:"consumed"`
	Assigned  [][]int32        `json:"assigned"`
	Committed map[int32]int64  `json:"committed"`
	Ends      map[int32]int64  `json:"ends"`
	Lag       int64            `json:"lag"`
	Errors    []string         `json:"errors"`
}

func fail(r *report, format string, args ...any) {
	r.Errors = append(r.Errors, fmt.Sprintf(format, args...))
}

func main() {
	if len(os.Args) != 5 {
		fmt.Fprintln(os.Stderr, "usage: franz BOOTSTRAP TOPIC GROUP RECORDS")
		os.Exit(2)
	}
	bootstrap, topic, group := os.Args[1], os.Args[2], os.Args[3]
	n, err := strconv.Atoi(os.Args[4])
	if err != nil {
		fmt.Fprintln(os.Stderr, "RECORDS:", err)
		os.Exit(2)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Second)
	defer cancel()
	r := report{Committed: map[int32]int64{}, Ends: map[int32]int64{}, Errors: []string{}}
	defer func() {
		out, _ := json.Marshal(r)
		fmt.Println(string(out))
	}()

	admin, err := kgo.NewClient(kgo.SeedBrokers(bootstrap))
	if err != nil {
		fail(&r, "admin client: %v", err)
		return
	}
	defer admin.Close()
	adm := kadm.NewClient(admin)
	created, err := adm.CreateTopic(ctx, 3, 3, nil, topic)
	if err != nil || created.Err != nil {
		fail(&r, "create topic: %v %v", err, created.Err)
		return
	}
	r.Created = true

	// Two members join and get every partition between them before anything is produced,
	// so no rebalance happens while they consume.
	var mu sync.Mutex
	assigned := make([]map[int32]bool, 2)
	members := make([]*kgo.Client, 2)
	for i := range members {
		i := i
		assigned[i] = map[int32]bool{}
		members[i], err = kgo.NewClient(
			kgo.SeedBrokers(bootstrap),
			kgo.ConsumerGroup(group),
			kgo.ConsumeTopics(topic),
			kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
			kgo.DisableAutoCommit(),
			kgo.OnPartitionsAssigned(func(_ context.Context, _ *kgo.Client, m map[string][]int32) {
				mu.Lock()
				defer mu.Unlock()
				for _, p := range m[topic] {
					assigned[i][p] = true
				}
			}),
			kgo.OnPartitionsRevoked(func(_ context.Context, _ *kgo.Client, m map[string][]int32) {
				mu.Lock()
				defer mu.Unlock()
				for _, p := range m[topic] {
					delete(assigned[i], p)
				}
			}),
		)
		if err != nil {
			fail(&r, "member %d: %v", i, err)
			return
		}
		defer members[i].Close()
	}
	consumed := make([][]rec, 2)
	polls := make(chan struct{})
	var wg sync.WaitGroup
	pollCtx, stopPolling := context.WithCancel(ctx)
	defer stopPolling()
	for i, m := range members {
		wg.Add(1)
		go func(i int, m *kgo.Client) {
			defer wg.Done()
			for pollCtx.Err() == nil {
				fetches := m.PollFetches(pollCtx)
				fetches.EachError(func(t string, p int32, err error) {
					if pollCtx.Err() == nil {
						mu.Lock()
						fail(&r, "member %d fetch %s-%d: %v", i, t, p, err)
						mu.Unlock()
					}
				})
				fetches.EachRecord(func(x *kgo.Record) {
					hs := [][]string{}
					for _, h := range x.Headers {
						hs = append(hs, []string{h.Key, string(h.Value)})
					}
					mu.Lock()
					consumed[i] = append(consumed[i], rec{x.Partition, x.Offset, string(x.Key), string(x.Value), hs})
					mu.Unlock()
				})
				select {
				case polls <- struct{}{}:
				default:
				}
			}
		}(i, m)
	}
	stable := func() bool {
		mu.Lock()
		defer mu.Unlock()
		seen := map[int32]bool{}
		for _, a := range assigned {
			if len(a) == 0 {
				return false
			}
			for p := range a {
				seen[p] = true
			}
		}
		return len(seen) == 3
	}
	for !stable() {
		select {
		case <-ctx.Done():
			fail(&r, "the two members never shared the 3 partitions: %v", assigned)
			return
		case <-time.After(50 * time.Millisecond):
		}
	}

	producer, err := kgo.NewClient(
		kgo.SeedBrokers(bootstrap),
		kgo.DefaultProduceTopic(topic),
		kgo.RequiredAcks(kgo.AllISRAcks()),
	)
	if err != nil {
		fail(&r, "producer: %v", err)
		return
	}
	defer producer.Close()
	var pmu sync.Mutex
	for k := 0; k < n; k++ {
		key := fmt.Sprintf("key-%d", k%17)
		value := fmt.Sprintf("franz-%d", k)
		x := &kgo.Record{
			Key:   []byte(key),
			Value: []byte(value),
			Headers: []kgo.RecordHeader{
				{Key: "h", Value: []byte("1")},
				{Key: "h", Value: []byte("2")},
			},
		}
		producer.Produce(ctx, x, func(x *kgo.Record, err error) {
			pmu.Lock()
			defer pmu.Unlock()
			if err != nil {
				fail(&r, "produce %s: %v", value, err)
				return
			}
			r.Acked = append(r.Acked, rec{x.Partition, x.Offset, key, value, nil})
		})
	}
	if err := producer.Flush(ctx); err != nil {
		fail(&r, "flush: %v", err)
		return
	}

	total := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(consumed[0]) + len(consumed[1])
	}
	for total() < n {
		select {
		case <-ctx.Done():
			fail(&r, "consumed %d of %d", total(), n)
			return
		case <-polls:
		case <-time.After(100 * time.Millisecond):
		}
	}
	stopPolling()
	wg.Wait()
	for i, m := range members {
		if err := m.CommitUncommittedOffsets(ctx); err != nil {
			fail(&r, "member %d commit: %v", i, err)
		}
	}
	r.Consumed = consumed
	for _, a := range assigned {
		ps := []int32{}
		for p := range a {
			ps = append(ps, p)
		}
		r.Assigned = append(r.Assigned, ps)
	}

	lags, err := adm.Lag(ctx, group)
	if err != nil {
		fail(&r, "lag: %v", err)
		return
	}
	l := lags[group]
	if l.Error() != nil {
		fail(&r, "lag of %s: %v", group, l.Error())
		return
	}
	for _, ps := range l.Lag {
		for p, ml := range ps {
			r.Committed[p] = ml.Commit.At
			r.Ends[p] = ml.End.Offset
		}
	}
	r.Lag = l.Lag.Total()
}
