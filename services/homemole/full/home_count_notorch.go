//go:build !torch

package main

import (
	"errors"

	"github.com/homemole/homemole/pipeline/homecount"
)

// spCounterLinked says this build can load a sequence-profile model: the
// CGO-free one cannot, and hands home count --sp-model to homemole-torch.
const spCounterLinked = false

func loadSPCounter(string) (homecount.Counter, func(), error) {
	return nil, nil, errors.New("home count --sp-model needs libtorch: run it through homemole, which hands it to homemole-torch")
}
