analyze text/arity.tbp
