#version 330 core
// Pull-push hole filling over a small pyramid of premultiplied (rgb * a, a) textures, a = coverage.
//   u_mode 0 (down): this level = the 2x2 texels of the finer level u_src, colour averaged by coverage,
//                    coverage = min(1, sum) (Gortler et al. 1996, "The Lumigraph", pull-push).
//   u_mode 1 (up):   rgb = this level's colour where covered, blended by coverage over the coarser
//                    level's filled result (bilinear, so the fill is smooth); u_src = coarser result.
//   u_mode 2 (copy): rgb of u_src, bilinear (spreads the pyramid's finest level over the texture).

#if defined VERTEX_SHADER

in vec2 in_vert;  // full-screen triangle strip, [-1, 1]

out vec2 v_uv;

void main() {
    v_uv = in_vert * 0.5 + 0.5;
    gl_Position = vec4(in_vert, 0.999, 1.0);  // behind the mesh pass (z 0) when depth testing
}

#elif defined FRAGMENT_SHADER

uniform int u_mode;
uniform sampler2D u_src;
uniform sampler2D u_level;    // up: this level's premultiplied pyramid texture
uniform bool u_has_coarse;    // up: false at the coarsest level
uniform vec3 u_default;       // colour where nothing at all was seen

in vec2 v_uv;

out vec4 f_out;

void main() {
    if (u_mode == 0) {
        ivec2 p = ivec2(gl_FragCoord.xy) * 2;
        vec4 sum = texelFetch(u_src, p, 0) + texelFetch(u_src, p + ivec2(1, 0), 0)
                   + texelFetch(u_src, p + ivec2(0, 1), 0) + texelFetch(u_src, p + ivec2(1, 1), 0);
        float a = min(sum.a, 1.0);
        f_out = sum.a > 1e-6 ? vec4(sum.rgb / sum.a * a, a) : vec4(0.0);
    } else if (u_mode == 1) {
        vec4 here = texelFetch(u_level, ivec2(gl_FragCoord.xy), 0);
        vec3 coarse = u_has_coarse ? texture(u_src, v_uv).rgb : u_default;
        vec3 c = here.a > 1e-6 ? mix(coarse, here.rgb / here.a, clamp(here.a, 0.0, 1.0)) : coarse;
        f_out = vec4(c, 1.0);
    } else {
        f_out = vec4(texture(u_src, v_uv).rgb, 0.0);
    }
}

#endif
