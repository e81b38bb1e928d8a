package evaluate

import (
	"slices"
	"testing"
)

func TestFamilies(t *testing.T) {
	labels := []string{"D-LinkSensor", "D-LinkSiren", "EdimaxCam1", "EdimaxCam2", "Aria", "iKettle2", "SmarterCoffee"}
	c := NewConfusion(labels)
	add := func(truth, pred, n int) {
		for range n {
			if err := c.Add(truth, pred); err != nil {
				t.Fatal(err)
			}
		}
	}
	add(0, 0, 80)
	add(0, 1, 20) // the sensor taken for the siren in 20 % of its packets
	add(1, 1, 100)
	add(2, 2, 100) // the Edimax cams are one hardware type though never confused
	add(3, 3, 100)
	add(4, 4, 99)
	add(4, 0, 1) // 1 % is noise, not a family
	add(5, 6, 50)
	add(5, 5, 50)
	add(6, 6, 100)
	fams := Families(c, 0.05)
	want := [][]string{{"D-LinkSensor", "D-LinkSiren"}, {"EdimaxCam1", "EdimaxCam2"}, {"SmarterCoffee", "iKettle2"}}
	if !slices.EqualFunc(fams, want, slices.Equal[[]string]) {
		t.Fatalf("families %v, want %v", fams, want)
	}
	of := FamilyOf(fams)
	if of["D-LinkSiren"] != "D-Link" || of["EdimaxCam2"] != "EdimaxCam" || of["iKettle2"] != "SmarterCoffee/iKettle2" {
		t.Fatalf("family names %v", of)
	}
	votes := []SessionVote{
		{Truth: "D-LinkSensor", Predicted: "D-LinkSiren"}, // right family, wrong device
		{Truth: "Aria", Predicted: "Aria"},
		{Truth: "Aria", Predicted: "D-LinkSensor"}, // wrong family
		{Truth: "iKettle2", Predicted: "SmarterCoffee"},
	}
	if got := FamilyAccuracy(votes, of); got != 0.75 {
		t.Fatalf("family accuracy %.2f, want 0.75", got)
	}
	for _, c := range []struct {
		members []string
		want    string
	}{
		{[]string{"TP-LinkPlugHS100", "TP-LinkPlugHS110"}, "TP-LinkPlugHS"},
		{[]string{"WeMoInsightSwitch", "WeMoInsightSwitch2"}, "WeMoInsightSwitch"},
		{[]string{"D-LinkDoorSensor", "D-LinkHomeHub", "D-LinkSiren"}, "D-Link"},
		{[]string{"EdimaxPlug1101W", "EdimaxPlug2101W"}, "EdimaxPlug"},
	} {
		if got := FamilyName(c.members); got != c.want {
			t.Errorf("FamilyName(%v) = %q, want %q", c.members, got, c.want)
		}
	}
}

// TestFamiliesNamedAlike: two families FamilyName names alike are still
// two families, for scoring as for reading.
func TestFamiliesNamedAlike(t *testing.T) {
	of := FamilyOf([][]string{{"D-LinkCam", "D-LinkDayCam"}, {"D-LinkSiren", "D-LinkWaterSensor"}, {"EdimaxCam1", "EdimaxCam2"}})
	if of["D-LinkCam"] == of["D-LinkSiren"] {
		t.Fatalf("the cameras and the sensors are one family, %q", of["D-LinkCam"])
	}
	if of["D-LinkCam"] != of["D-LinkDayCam"] || of["D-LinkSiren"] != of["D-LinkWaterSensor"] || of["EdimaxCam1"] != "EdimaxCam" {
		t.Fatalf("family names %v", of)
	}
	votes := []SessionVote{
		{Truth: "D-LinkCam", Predicted: "D-LinkSiren"},         // another family of one vendor
		{Truth: "D-LinkSiren", Predicted: "D-LinkWaterSensor"}, // its family
	}
	if got := FamilyAccuracy(votes, of); got != 0.5 {
		t.Fatalf("family accuracy %.2f, want 0.50", got)
	}
}
