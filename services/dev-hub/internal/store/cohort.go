package store

import (
	"bytes"
	"encoding/json"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/flip-trust/node/shared/hubapi"
)

func cohortKey(queryID, trustID string) []byte {
	return []byte(queryID + "/" + trustID)
}

// UpsertCohortResult stores a trust's cohort result, replacing any earlier one
// for the same (query_id, trust_id) and counting how many were received.
func (s *Store) UpsertCohortResult(in hubapi.CohortResults, now time.Time) (CohortResult, error) {
	now = now.UTC()
	var row CohortResult
	err := s.writes.Do(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketCohort)
		key := cohortKey(in.QueryID, in.TrustID)
		row = CohortResult{}
		if raw := b.Get(key); raw != nil {
			if err := json.Unmarshal(raw, &row); err != nil {
				return fmt.Errorf("decode cohort result: %w", err)
			}
		} else {
			row.FirstReceived = now
		}
		data := in.Data
		if data == nil {
			data = []hubapi.CohortStat{}
		}
		row.QueryID = in.QueryID
		row.TrustID = in.TrustID
		row.Created = in.Created
		row.Data = CohortData{RecordCount: in.RecordCount, Data: data, Error: in.Error, Suppressed: in.Suppressed}
		row.ReceivedCount++
		row.UpdatedAt = now
		return putJSON(b, key, row)
	})
	if err != nil {
		return CohortResult{}, fmt.Errorf("upsert cohort result: %w", err)
	}
	return row, nil
}

// CohortResults returns the stored results for a query, or every stored result
// when queryID is empty.
func (s *Store) CohortResults(queryID string) ([]CohortResult, error) {
	out := []CohortResult{}
	var prefix []byte
	if queryID != "" {
		prefix = []byte(queryID + "/")
	}
	err := s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketCohort).Cursor()
		for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
			var row CohortResult
			if err := json.Unmarshal(v, &row); err != nil {
				return fmt.Errorf("decode cohort result: %w", err)
			}
			out = append(out, row)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list cohort results: %w", err)
	}
	return out, nil
}
