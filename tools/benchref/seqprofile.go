package main

import "fmt"

// seqprofileTarget is issue 8's goal for SP matching on one core.
const seqprofileTarget = 1e6

// seqprofileBench measures sequence-profile matching: the SPs of every IoT
// Sentinel device type (31 types, up to 10 SPs each) against all their
// captures' packets, on one core, and prints packets/s against the goal.
// The paper's own matcher is not published, so there is no reference.
func seqprofileBench() error {
	fmt.Println("sequence profiles: all SPs of 31 device types matched against the IoT Sentinel captures (1 core) ...")
	ours, err := goBench("./pipeline/seqprofile/", "BenchmarkMatch", "packets/s", "3s")
	if err != nil {
		return fmt.Errorf("sequence-profile bench: %w", err)
	}
	verdict := "met"
	if ours < seqprofileTarget {
		verdict = "MISSED"
	}
	fmt.Printf("SP matching, 31 device types (1 core): %.0f packets/s (%s: >= %.0fM/s)\n", ours, verdict, seqprofileTarget/1e6)
	return nil
}
