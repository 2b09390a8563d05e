// The pod sandbox ("pause") program of the kind node image, standard library only.
module prapi.invalid/kind/tools/pause

go 1.24.0
