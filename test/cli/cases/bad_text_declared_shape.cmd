run text/declared_shape.tbp --budget min
