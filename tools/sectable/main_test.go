package main

import (
	"strings"
	"testing"
)

const sample = `{"Action":"run","Package":"p","Test":"TestSecurityA"}
{"Action":"output","Package":"p","Test":"TestSecurityA","Output":"    a_test.go:9: attack: forged batch | expected: refused | observed: refused, 1 dead letter\n"}
{"Action":"pass","Package":"p","Test":"TestSecurityA"}
{"Action":"run","Package":"p","Test":"TestSecurityB"}
{"Action":"output","Package":"p","Test":"TestSecurityB","Output":"    b_test.go:9: home-1 overheard 5 messages\n"}
{"Action":"output","Package":"p","Test":"TestSecurityB","Output":"    b_test.go:9: attack: eavesdrop | expected: nothing overheard | observed: 5 overheard\n"}
{"Action":"fail","Package":"p","Test":"TestSecurityB"}
{"Action":"run","Package":"p","Test":"TestOther"}
{"Action":"pass","Package":"p","Test":"TestOther"}
{"Action":"fail","Package":"p"}
`

func TestTable(t *testing.T) {
	res, err := read(strings.NewReader(sample))
	if err != nil {
		t.Fatal(err)
	}
	if len(res.rows) != 2 || res.rows[0].attack != "forged batch" || res.rows[0].result != "PASS" || res.rows[1].observed != "5 overheard" || res.rows[1].result != "FAIL" {
		t.Fatalf("rows %+v", res.rows)
	}
	var out strings.Builder
	if code := print(&out, res); code == 0 {
		t.Errorf("a failed security test gave exit code 0:\n%s", out.String())
	}
	if !strings.Contains(out.String(), "home-1 overheard 5 messages") {
		t.Errorf("the failed test's output is missing:\n%s", out.String())
	}
	empty, _ := read(strings.NewReader(`{"Action":"run","Package":"p","Test":"TestOther"}` + "\n"))
	if code := print(&out, empty); code == 0 {
		t.Error("no security test ran, yet exit code 0")
	}
}
