analyze "$TBP_TMP/x.tbp"; printf "graph g {\n  input %%x : f32[2]\n  %%y : f32[2] = Relu(%%z)\n}\n" > "$TBP_TMP/x.tbp"; "$TBP" analyze "$TBP_TMP/x.tbp"
