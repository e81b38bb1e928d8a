package learn

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/sugarme/gotch"
)

// Device names accepted by --device.
const (
	DeviceAuto = "auto" // CUDA when libtorch sees a GPU, else the CPU
	DeviceCPU  = "cpu"
	DeviceCUDA = "cuda" // the first GPU; "cuda:N" picks another; an error without one
)

// CheckDevice reports whether name is a device this package can be asked
// for, without asking libtorch anything.
func CheckDevice(name string) error {
	_, _, err := parseDevice(name)
	return err
}

func parseDevice(name string) (kind string, index int, err error) {
	switch {
	case name == "" || name == DeviceAuto:
		return DeviceAuto, 0, nil
	case name == DeviceCPU:
		return DeviceCPU, 0, nil
	case name == DeviceCUDA:
		return DeviceCUDA, 0, nil
	case strings.HasPrefix(name, DeviceCUDA+":"):
		n, err := strconv.Atoi(strings.TrimPrefix(name, DeviceCUDA+":"))
		if err == nil && n >= 0 {
			return DeviceCUDA, n, nil
		}
	}
	return "", 0, fmt.Errorf("device %q: want %s, %s, %s or %s:N", name, DeviceCPU, DeviceCUDA, DeviceAuto, DeviceCUDA)
}

// DeviceInfo is what libtorch says about where tensors can live.
type DeviceInfo struct {
	Asked    string // as given: cpu, cuda, cuda:N or auto
	Using    string // cpu or cuda:N
	CUDA     bool   // libtorch sees a usable GPU
	GPUs     int64
	CuDNN    bool
	Threads  int // libtorch's intra-op threads (CPU work)
	resolved gotch.Device
}

// ResolveDevice picks the device for name: auto takes the first GPU when
// libtorch sees one (a CUDA build of libtorch, a driver, a GPU), else the
// CPU; cuda without a GPU is an error, not a silent fall back to the CPU.
func ResolveDevice(name string) (DeviceInfo, error) {
	kind, index, err := parseDevice(name)
	if err != nil {
		return DeviceInfo{}, err
	}
	if name == "" {
		name = DeviceAuto
	}
	info := DeviceInfo{Asked: name, Using: DeviceCPU, resolved: gotch.CPU, CUDA: gotch.CUDA.IsAvailable(), Threads: TorchThreads()}
	if info.CUDA {
		info.GPUs = gotch.CUDA.DeviceCount()
		info.CuDNN = gotch.CUDA.CudnnIsAvailable()
	}
	switch kind {
	case DeviceCPU:
	case DeviceAuto:
		if info.CUDA {
			info.Using, info.resolved = "cuda:0", gotch.CudaBuilder(0)
		}
	case DeviceCUDA:
		if !info.CUDA {
			return info, fmt.Errorf("device %s: libtorch sees no GPU (a CPU-only libtorch, no NVIDIA driver, or no GPU); use --device cpu or auto", name)
		}
		if int64(index) >= info.GPUs {
			return info, fmt.Errorf("device %s: libtorch sees %d GPU(s), numbered from 0", name, info.GPUs)
		}
		info.Using, info.resolved = fmt.Sprintf("cuda:%d", index), gotch.CudaBuilder(uint(index))
	}
	return info, nil
}

// LogArgs gives the choice as slog attributes, for the line every command
// that trains or predicts logs at its start.
func (d DeviceInfo) LogArgs() []any {
	return []any{"asked", d.Asked, "using", d.Using, "cuda_available", d.CUDA, "gpus", d.GPUs, "cudnn", d.CuDNN, "torch_threads", d.Threads}
}

// Device is the resolved device, for code that makes its own tensors
// (pipeline/detect's CNNs).
func (d DeviceInfo) Device() gotch.Device { return d.resolved }
