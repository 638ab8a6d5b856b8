package runner

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/flip-trust/node/services/trust-api/internal/journal"
)

// Metrics are the task engine's Prometheus metrics. A nil *Metrics records
// nothing.
type Metrics struct {
	HubUp           prometheus.Gauge
	Tasks           *prometheus.CounterVec
	Heartbeats      *prometheus.CounterVec
	DeliveryRetries prometheus.Counter
}

// NewMetrics registers the engine's metrics on reg, including a journal
// backlog gauge read from j at scrape time.
func NewMetrics(reg prometheus.Registerer, j *journal.Journal) (*Metrics, error) {
	m := &Metrics{
		HubUp: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "flip_trust_api_hub_up", Help: "1 when the last heartbeat and the last poll both reached the hub.",
		}),
		Tasks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flip_trust_api_tasks_total", Help: "Tasks executed, by task type and outcome (success, failed, interrupted).",
		}, []string{"task_type", "outcome"}),
		Heartbeats: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flip_trust_api_heartbeats_total", Help: "Heartbeats sent, by result (ok, error).",
		}, []string{"result"}),
		DeliveryRetries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "flip_trust_api_delivery_retries_total", Help: "Failed attempts to deliver a task result to the hub.",
		}),
	}
	for _, c := range []prometheus.Collector{m.HubUp, m.Tasks, m.Heartbeats, m.DeliveryRetries, &backlog{j: j, desc: backlogDesc}} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register metrics: %w", err)
		}
	}
	return m, nil
}

func (m *Metrics) task(taskType, outcome string) {
	if m != nil {
		m.Tasks.WithLabelValues(taskType, outcome).Inc()
	}
}

func (m *Metrics) heartbeat(err error) {
	if m == nil {
		return
	}
	if err != nil {
		m.Heartbeats.WithLabelValues("error").Inc()
		return
	}
	m.Heartbeats.WithLabelValues("ok").Inc()
}

func (m *Metrics) hubUp(up bool) {
	if m == nil {
		return
	}
	if up {
		m.HubUp.Set(1)
		return
	}
	m.HubUp.Set(0)
}

var backlogDesc = prometheus.NewDesc("flip_trust_api_journal_entries",
	"Task journal entries by state; claimed, running and recorded are the backlog.", []string{"state"}, nil)

// backlog reads the journal's counts at scrape time.
type backlog struct {
	j    *journal.Journal
	desc *prometheus.Desc
}

func (b *backlog) Describe(ch chan<- *prometheus.Desc) { ch <- b.desc }

func (b *backlog) Collect(ch chan<- prometheus.Metric) {
	counts, err := b.j.Counts()
	if err != nil {
		ch <- prometheus.NewInvalidMetric(b.desc, err)
		return
	}
	for _, s := range journal.States {
		ch <- prometheus.MustNewConstMetric(b.desc, prometheus.GaugeValue, float64(counts[s]), string(s))
	}
}
