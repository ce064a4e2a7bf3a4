#version 330 core
// Texel map of the UV layout: for each texel the mesh triangle covering it and the texel centre's
// barycentric coordinates in it, so the compute bake/resolve can interpolate per-frame vertex data
// without rasterising (on GPUs with few graphics units, e.g. the H100, compute is far faster).
// Drawn non-indexed: corner k of triangle t has in_bary = e_k and gl_PrimitiveID = t.
// Output: (b1, b2, t, 1) inside the layout; the target is cleared to 0 (alpha 0 = outside).

#if defined VERTEX_SHADER

in vec2 in_uv;
in vec3 in_bary;

out vec3 v_bary;

void main() {
    v_bary = in_bary;
    gl_Position = vec4(in_uv * 2.0 - 1.0, 0.0, 1.0);
}

#elif defined FRAGMENT_SHADER

in vec3 v_bary;

out vec4 f_out;

void main() {
    f_out = vec4(v_bary.y, v_bary.z, float(gl_PrimitiveID), 1.0);
}

#endif
