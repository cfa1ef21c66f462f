"""The search page for people: plain HTML, CSS and JS shipped in this
package (no framework, no build step, nothing from another origin), served
by `sie-dns-collector serve` beside the API it calls (see `page`)."""
