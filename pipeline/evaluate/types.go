package evaluate

// identicalHardware lists the IoT Sentinel devices that are the same
// hardware under two names (the paper's 27 types from 31 devices): a model
// cannot, and need not, tell them apart.
var identicalHardware = map[string]string{
	"EdimaxCam1": "EdimaxCam", "EdimaxCam2": "EdimaxCam",
	"EdnetCam1": "EdnetCam", "EdnetCam2": "EdnetCam",
	"WeMoInsightSwitch": "WeMoInsightSwitch", "WeMoInsightSwitch2": "WeMoInsightSwitch",
	"WeMoSwitch": "WeMoSwitch", "WeMoSwitch2": "WeMoSwitch",
}

// TypeOf is the device type of a device name: the name itself except for
// the identical-hardware pairs of the IoT Sentinel set.
func TypeOf(device string) string {
	if t, ok := identicalHardware[device]; ok {
		return t
	}
	return device
}
