package main

// seqprofileTarget is issue 8's goal for SP matching on one core.
const seqprofileTarget = 1e6

// seqprofileBench measures sequence-profile matching: the SPs of every IoT
// Sentinel device type (31 types, up to 10 SPs each) against all their
// captures' packets, on one core, and prints packets/s against the goal.
// The paper's own matcher is not published, so there is no reference.
func seqprofileBench() error {
	return goalBench{
		intro: "sequence profiles: all SPs of 31 device types matched against the IoT Sentinel captures (1 core) ...",
		pkg:   "./pipeline/seqprofile/", bench: "BenchmarkMatch", benchtime: "3s",
		what:   "sequence-profile",
		result: "SP matching, 31 device types (1 core)",
		goal:   seqprofileTarget,
	}.run()
}
