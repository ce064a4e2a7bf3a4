#version 330 core
// Resolve the accumulated (rgb * w, w) texture over the mesh in UV space. A texel seen in some frame
// takes its weighted mean colour; one never seen takes its mirror partner's colour (the mesh's
// left/right vertex map, interpolated in UV space) when that was seen; else, in the final pass, the
// diffused colour from the pull-push pyramid.
//   u_final = false: pyramid base, premultiplied (rgb, 1) where seen or mirrored, 0 elsewhere.
//   u_final = true:  output texture, rgb filled, alpha = 1 only where actually seen (the valid mask).

#if defined VERTEX_SHADER

in vec2 in_uv;
in vec2 in_mirror_uv;  // UV of the mirror-partner vertex

out vec2 v_uv;
out vec2 v_mirror_uv;

void main() {
    v_uv = in_uv;
    v_mirror_uv = in_mirror_uv;
    gl_Position = vec4(in_uv * 2.0 - 1.0, 0.0, 1.0);
}

#elif defined FRAGMENT_SHADER

uniform sampler2D u_accum;   // (sum rgb * w, sum w), same size as the output
uniform sampler2D u_coarse;  // pull-push result, rgb
uniform float u_min_weight;
uniform bool u_mirror;
uniform bool u_diffuse;
uniform bool u_final;

in vec2 v_uv;
in vec2 v_mirror_uv;

out vec4 f_out;

void main() {
    // final pass: the exact texel; pyramid base (coarser than the accumulator): a bilinear tap
    vec4 own = u_final ? texelFetch(u_accum, ivec2(gl_FragCoord.xy), 0) : texture(u_accum, v_uv);
    if (own.a > u_min_weight) {
        f_out = vec4(own.rgb / own.a, 1.0);
        return;
    }
    vec4 m = u_mirror ? texture(u_accum, v_mirror_uv) : vec4(0.0);
    if (m.a > u_min_weight) {
        f_out = vec4(m.rgb / m.a, u_final ? 0.0 : 1.0);
    } else if (u_final && u_diffuse) {
        f_out = vec4(texture(u_coarse, v_uv).rgb, 0.0);
    } else {
        f_out = vec4(0.0);
    }
}

#endif
