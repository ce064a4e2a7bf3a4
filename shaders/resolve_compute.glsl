#version 430 core
// Compute form of the accumulator's final resolve (mirror.glsl with u_final, plus the pull-push
// copy of pull_push.glsl mode 2; keep them in step), in one pass over every texel and no clear:
// seen texels take their weighted mean (alpha 1); unseen texels of the layout their mirror partner's
// colour when that was seen; everything else the diffused pyramid colour (alpha 0), or 0 without it.

#if defined COMPUTE_SHADER

layout(local_size_x = 8, local_size_y = 8) in;

layout(rgba8, binding = 0) writeonly uniform image2D u_out;
layout(std430, binding = 0) readonly buffer Triangles { int b_triangle[]; };
layout(std430, binding = 1) readonly buffer MirrorUV { float b_mirror_uv[]; };  // uv per vertex

uniform sampler2D u_map;     // texel map: (b1, b2, triangle, 1)
uniform sampler2D u_accum;   // (sum rgb * w, sum w), same size as the output
uniform sampler2D u_coarse;  // pull-push result, rgb
uniform float u_min_weight;
uniform bool u_mirror;
uniform bool u_diffuse;

vec2 mirror_uv(int i) { return vec2(b_mirror_uv[2 * i], b_mirror_uv[2 * i + 1]); }

void main() {
    ivec2 p = ivec2(gl_GlobalInvocationID.xy);
    ivec2 size = imageSize(u_out);
    if (any(greaterThanEqual(p, size))) {
        return;
    }
    vec4 result = vec4(0.0);
    vec4 m = texelFetch(u_map, p, 0);
    vec4 own = texelFetch(u_accum, p, 0);
    if (m.a > 0.5 && own.a > u_min_weight) {
        result = vec4(own.rgb / own.a, 1.0);
    } else {
        bool mirrored = false;
        if (m.a > 0.5 && u_mirror) {
            int t = 3 * int(m.z + 0.5);
            ivec3 i = ivec3(b_triangle[t], b_triangle[t + 1], b_triangle[t + 2]);
            vec3 b = vec3(1.0 - m.x - m.y, m.x, m.y);
            vec2 uv = b.x * mirror_uv(i.x) + b.y * mirror_uv(i.y) + b.z * mirror_uv(i.z);
            vec4 mm = textureLod(u_accum, uv, 0.0);
            if (mm.a > u_min_weight) {
                result = vec4(mm.rgb / mm.a, 0.0);
                mirrored = true;
            }
        }
        if (!mirrored && u_diffuse) {
            result = vec4(textureLod(u_coarse, (vec2(p) + 0.5) / vec2(size), 0.0).rgb, 0.0);
        }
    }
    imageStore(u_out, p, result);
}

#endif
