module github.com/flip-trust/node/services/fl-client

go 1.26.0

replace github.com/flip-trust/node/shared => ../../shared

require github.com/flip-trust/node/shared v0.0.0

require github.com/NVIDIA/go-nvml v0.13.4-1
