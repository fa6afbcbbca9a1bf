run text/nonzero.tbp
